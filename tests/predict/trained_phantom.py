"""The predict tests' model and inputs: one tiny diffusion trial on the smoke-size phantom
(trained once per pytest session, shared by every module that asks), and phantom test cases
rewritten on other grids than the prepared set's (other orientation, spacing and field of view).
"""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
from diffseg3d.core.data.resample import resample_to_grid
from diffseg3d.core.data.sources.phantom import PhantomSpec, make_phantom
from diffseg3d.experiments.config.layering import deep_merge, load_profile
from diffseg3d.experiments.config.schema import validate_config
from diffseg3d.experiments.tracking import mlflow_runs as tracking
from diffseg3d.experiments.trial.run import run_trial

EXPERIMENT = "predict"
TEST_CASES = ("phantom_004", "phantom_005")
#: Input voxel size = SCALE x the prepared spacing; field of view = GROW x the prepared one.
SCALE, GROW = 1.2, 1.3

_TRAINED: dict = {}


def trained_trial(tmp_path_factory) -> dict:
    """{root, data, uri, run_id, workdir, result}: the smoke profile (20 steps) without
    validation or saved predictions, logged to a fresh SQLite store."""
    if not _TRAINED:
        root = tmp_path_factory.mktemp("predict_trial")
        data = Path(make_phantom(root / "phantom", PhantomSpec(cases=6, shape=(16, 16, 8))))
        uri = f"sqlite:///{root / 'mlflow.db'}"
        tracking.ensure_experiment(EXPERIMENT, tracking.default_artifact_location(root, uri),
                                   tracking_uri=uri)
        config = validate_config(deep_merge(load_profile("smoke"), {
            "name": "tiny", "data": {"root": str(data)},
            "train": {"eval_every": 0, "checkpoint_every": 0}, "eval": {"save_predictions": 0}}))
        workdir = root / "trials" / "tiny"
        result = run_trial(config, workdir=workdir, tracking_uri=uri, experiment=EXPERIMENT)
        _TRAINED.update(root=root, data=data, uri=uri, run_id=result["run_id"],
                        workdir=workdir, result=result)
    return _TRAINED


def lps_grid(affine: np.ndarray, shape) -> tuple[np.ndarray, tuple[int, int, int]]:
    """A grid over the same centre with stored axes (z, x, y), x and y flipped (LPS), voxels
    SCALE times larger and a field of view GROW times larger than the RAS grid (affine, shape)."""
    spacing = np.abs(np.diag(affine)[:3]) * SCALE
    fov = np.asarray(shape) * np.abs(np.diag(affine)[:3]) * GROW
    world_axes = (2, 0, 1)  # stored axis i runs along world axis world_axes[i]
    signs = (1.0, -1.0, -1.0)
    new_shape = tuple(math.ceil(fov[w] / spacing[w]) for w in world_axes)
    new = np.zeros((4, 4))
    new[3, 3] = 1.0
    for i, (w, sign) in enumerate(zip(world_axes, signs, strict=True)):
        new[w, i] = sign * spacing[w]
    centre = affine @ np.append((np.asarray(shape) - 1) / 2.0, 1.0)
    new[:3, 3] = centre[:3] - new[:3, :3] @ ((np.asarray(new_shape) - 1) / 2.0)
    return new, new_shape


def write_reoriented(data: Path, out: Path, cases=TEST_CASES) -> dict[str, np.ndarray]:
    """Write each case's image as `<out>/<case>_0000.nii.gz` on its `lps_grid` (linear), and
    return case -> its ground-truth label on that grid (nearest)."""
    out.mkdir(parents=True, exist_ok=True)
    truth = {}
    for case in cases:
        image = nib.load(str(data / "imagesTr" / f"{case}.nii.gz"))
        label = np.asarray(nib.load(str(data / "labelsTr" / f"{case}.nii.gz")).dataobj)
        affine, shape = lps_grid(image.affine, image.shape)
        values = resample_to_grid(np.asarray(image.dataobj, np.float32), image.affine, affine,
                                  shape, order=1)
        nib.save(nib.Nifti1Image(values.astype(np.float32), affine),
                 str(out / f"{case}_0000.nii.gz"))
        truth[case] = resample_to_grid(label, image.affine, affine, shape, order=0)
    return truth


def lps_permuted(array: np.ndarray) -> np.ndarray:
    """The stored array of `write_lps_permuted`: B[i, j, k] = A[nx-1-j, ny-1-k, i] (stored axes
    S, L, P instead of R, A, S)."""
    return np.transpose(np.asarray(array)[::-1, ::-1, :], (2, 0, 1))


def write_lps_permuted(source: Path, out: Path) -> Path:
    """The same voxels as `source` (a RAS image), stored in another axis order (`lps_permuted`)
    with the affine that keeps every voxel at its world position: a lossless reorientation."""
    image = nib.load(str(source))
    nx, ny, _ = image.shape
    index = np.array([[0, -1, 0, nx - 1], [0, 0, -1, ny - 1], [1, 0, 0, 0], [0, 0, 0, 1]],
                     np.float64)
    out.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(lps_permuted(np.asarray(image.dataobj, np.float32)),
                             image.affine @ index), str(out))
    return out
