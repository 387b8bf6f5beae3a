"""Reference labels for `diffseg3d predict --labels`: which file belongs to which case, and each
one on the prepared grid the prediction is made on, to score the case's N-sample set.

`reference_files` matches the labels to the input cases: one label file for a one-case input, or
a folder of `<case>.nii.gz` / `<case>.nii` label maps matched by case name (an input
`<case>_0000.nii.gz` is case `<case>`, `predictor.list_cases`); a case without its label is an
error naming the case and the folder, before anything is predicted.

`reference_on_grid` reads one label map as the data preparation does (`core.data.nifti.io`:
a 3D integer map, on the input image's grid, values in the model's class list 0..C-1) and
resamples it with nearest neighbour through world coordinates onto the prepared grid of the
case (`core.data.resample.resample_to_grid`; voxels outside the label's grid are background),
so the reference and the samples are compared voxel for voxel where the model predicted.

The scores are the trial's (`experiments.trial.uncertainty.UncertaintyScores`: ensemble Dice,
sample Dice spread, diversity, GED, ECE and error detection per case and class) and so is their
CSV (`write_scores`: `record.ARTIFACT_UNCERTAINTY` next to the predictions, with the
reliability bins and a figure slice).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from diffseg3d.core.data.inference import VolumeGeometry
from diffseg3d.core.data.nifti.io import Volume, check_label_values, check_same_grid, read_volume
from diffseg3d.core.data.resample import resample_to_grid
from diffseg3d.experiments.trial.uncertainty import UncertaintyScores
from diffseg3d.predict.evaluate_folder import EvaluateError, case_files
from diffseg3d.predict.model_source import PredictError

#: Least samples a reference scores: the sample-set scores (spread, diversity, GED) need two.
MIN_SAMPLES = 2


def check_samples(samples: int) -> None:
    """`--labels` scores a sample set: `--samples` must be at least `MIN_SAMPLES`."""
    if samples < MIN_SAMPLES:
        raise PredictError(f"--labels needs --samples N >= {MIN_SAMPLES} (it scores the set of "
                           f"N diffusion samples against the reference), got --samples {samples}")


def reference_files(labels: str | os.PathLike, cases: dict[str, list[Path]]) -> dict[str, Path]:
    """Case -> its label file, for every case of `cases` (`predictor.list_cases`)."""
    path = Path(labels)
    if path.is_file():
        if len(cases) != 1:
            raise PredictError(f"--labels {path}: one label file for {len(cases)} input cases; "
                               "give a folder of <case>.nii.gz label maps")
        return {next(iter(cases)): path}
    if not path.is_dir():
        raise PredictError(f"--labels {path}: no such file or folder")
    try:
        found = case_files(path)
    except EvaluateError as err:
        raise PredictError(f"--labels {err}") from None
    missing = [case for case in cases if case not in found]
    if missing:
        raise PredictError(f"--labels {path}: no label <case>.nii.gz for case(s) "
                           f"{', '.join(missing)}")
    return {case: found[case] for case in cases}


def reference_on_grid(path: Path, image_name: str, geometry: VolumeGeometry,
                      num_classes: int) -> np.ndarray:
    """The label map `path` (on the grid of input image `image_name`, values 0..num_classes-1)
    on the prepared grid of `geometry`: (X, Y, Z) int32, nearest neighbour.

    Raises `DataError` naming the file: unreadable, not a 3D integer map, another shape or affine
    than the image's (1e-3 mm), or values outside the class list.
    """
    label = read_volume(path, is_label=True)
    image = Volume(np.broadcast_to(np.uint8(0), geometry.original_shape),
                   geometry.original_affine)
    check_same_grid(image, label, image_name, str(path))
    check_label_values(label.array, num_classes, str(path))
    prepared = resample_to_grid(label.array.astype(np.int32), label.affine, geometry.affine,
                                geometry.shape, order=0, cval=0)
    return prepared.astype(np.int32)


def summary_line(scores: UncertaintyScores, path: Path) -> str:
    """One line: cases scored, their mean ensemble Dice, sample Dice spread, GED, ECE and the
    entropy's AUROC (means over cases of the per-case class means), and the CSV."""
    if not scores.rows:
        return "scored against --labels: no case was predicted"
    by_case: dict[str, list[float]] = {}
    for row in scores.rows:
        by_case.setdefault(row["case"], []).append(row["dice_ensemble"])
    dice = [float(np.nanmean(v)) for v in by_case.values() if np.isfinite(v).any()]
    means = scores.summary("")
    parts = [f"Dice (ensemble) {np.mean(dice) if dice else math.nan:.3f}"] + [
        f"{name} {means[f'_{key}']:.3f}" for name, key in (
            ("Dice spread", "sample_dice_std"), ("GED", "ged"), ("ECE", "ece"),
            ("AUROC (entropy)", "auroc_entropy"))]
    return f"scored {len(by_case)} case(s) against --labels: {', '.join(parts)} -> {path}"
