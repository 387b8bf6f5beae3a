"""A trained model on new NIfTI volumes: load it, predict, write labels in each input's own grid.

Loading the model (`load_model`, `TrainedModel`, `PredictError`) is `model_source.py`.

`predict_volumes` runs every case through the same chain:
  1. `inference.prepare_volume` replays the data set's preparation (RAS, intensity window,
     spacing, crop/pad) recorded in `preparation.json`;
  2. U-Net: one forward pass, argmax. Diffusion: N = `samples` independent samples of the
     K-step sampler (paper 3.1), `batch` of them per device call; the label is the argmax of
     the mean of the N final x0_hat probability maps, with the per-voxel entropy of that mean
     and the fraction of samples that disagree with it (`core.infer.ensemble.ensemble_maps`);
  3. `inference.restore_label` / `restore_map` put the result back on the input's grid (its
     shape and affine): `<case>.nii.gz` (integer labels), with N > 1 also
     `<case>_entropy.nii.gz` (nats) and `<case>_disagreement.nii.gz` (fraction in [0, 1]).
  4. with reference labels (`labels`, `reference.py`): each label map resampled (nearest) onto
     the prepared grid, the N samples scored against it by the trial's scorer
     (`experiments.trial.uncertainty`), its CSV next to the predictions.
The N final x0_hat (N x volume x classes, float32) stay on the device for the ensemble; a
smaller `batch` bounds the sampler's memory, not theirs. Every file is written under a temporary
name and renamed, so an interrupted run leaves none half-written. One compiled function serves
all cases (every prepared volume has the same shape): it is compiled ahead of time, before the
first case, so a case can never trigger a recompile.

Randomness: every case is sampled from the key `PRNGKey(seed)`, the device call j of a case
(samples j*batch .. j*batch+batch-1) with `fold_in(PRNGKey(seed), j)`. A case's output therefore
depends on its volume, the model, seed, samples, batch, steps and sampler only, not on the other
files of the folder; the pyfunc model (`pyfunc_model`) samples each row the same way.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
from diffseg3d.core.data.inference import (
    prepare_volume,
    restore_label,
    restore_map,
)
from diffseg3d.core.data.nifti.io import DataError
from diffseg3d.core.infer.ensemble import ensemble_maps, ensemble_probabilities
from diffseg3d.core.infer.sampling import SAMPLERS
from diffseg3d.experiments.config.schema import Config
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.trial import build
from diffseg3d.experiments.trial.uncertainty import UncertaintyScores, write_scores
from diffseg3d.experiments.write_failure import OutputWriteError, no_room_errno, no_room_reason
from diffseg3d.predict import reference
from diffseg3d.predict.model_source import PredictError, TrainedModel
from tqdm import tqdm

#: The labels file written next to the predictions.
LABELS_JSON = "labels.json"
#: Suffixes of the outputs besides `<case>.nii.gz` (written when samples > 1).
ENTROPY_SUFFIX = "_entropy"
DISAGREEMENT_SUFFIX = "_disagreement"

_NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: nnU-Net's channel suffix: `<case>_0000.nii.gz` is channel 0 of case `<case>`.
_CHANNEL = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")


# ---------------------------------------------------------------------------------------------
# One compiled predictor for every case


@dataclasses.dataclass(frozen=True)
class CaseMaps:
    """One case on the prepared grid: label (X, Y, Z) int32; entropy and disagreement (X, Y, Z)
    float32 when samples > 1, else None; with `keep_samples` also the ensemble's mean class
    probabilities `probs` (X, Y, Z, C) float32 and each sample's label `sample_labels`
    (N, X, Y, Z) int32 (what `--labels` scores), else None."""

    label: np.ndarray
    entropy: np.ndarray | None
    disagreement: np.ndarray | None
    probs: np.ndarray | None = None
    sample_labels: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class Settings:
    """Sampling settings after defaults: N samples, `batch` of them per device call, K steps
    and the sampler (None for a U-Net)."""

    samples: int
    batch: int
    steps: int | None
    sampler: str | None


def resolve_settings(model: TrainedModel, samples: int = 1, steps: int | None = None,
                     sampler: str | None = None, batch: int | None = None) -> Settings:
    """Check the options against the model: `steps` 1..T (default `diffusion.sample_steps`),
    `sampler` in SAMPLERS (default `diffusion.sampler`), `batch` 1..samples (default samples);
    a U-Net takes none of them and one sample."""
    if samples < 1:
        raise PredictError(f"--samples {samples}: must be >= 1")
    if batch is not None and batch < 1:
        raise PredictError(f"--batch {batch}: must be >= 1")
    if not model.diffusion:
        given = [f"--{name}" for name, value in (("steps", steps), ("sampler", sampler))
                 if value is not None] + (["--samples"] if samples != 1 else [])
        if given:
            raise PredictError(f"{' '.join(given)}: {model.source} is a U-Net (one prediction, "
                               "no sampling); drop the option")
        return Settings(samples=1, batch=1, steps=None, sampler=None)
    d = model.config.diffusion
    steps = d.sample_steps if steps is None else int(steps)
    if not 1 <= steps <= d.num_timesteps:
        raise PredictError(f"--steps {steps}: must be in 1..{d.num_timesteps} (the model's T)")
    sampler = d.sampler if sampler is None else sampler
    if sampler not in SAMPLERS:
        raise PredictError(f"--sampler {sampler}: must be one of {', '.join(SAMPLERS)}")
    return Settings(samples=samples, batch=min(batch or samples, samples), steps=steps,
                    sampler=sampler)


def _sampling_config(config: Config, settings: Settings) -> Config:
    diffusion = config.diffusion.model_copy(
        update={"sample_steps": settings.steps, "sampler": settings.sampler})
    return config.model_copy(update={"diffusion": diffusion})


class CasePredictor:
    """`predict(image (X, Y, Z), key) -> CaseMaps` for one model and `Settings`, compiled once
    (ahead of time, for the model's prepared shape) and reused for every case."""

    def __init__(self, model: TrainedModel, settings: Settings):
        self.model, self.settings = model, settings
        net = build.model(model.config, model.num_classes)
        if model.diffusion:
            sample = build.sampler(_sampling_config(model.config, settings), net,
                                   model.num_classes)

            def run(params, images, key):  # the final x0_hat (batch, *S, C) of each sample
                return sample(params, images, key, return_trajectory=True)[1][-1]
        else:
            predict = build.predictor(model.config, net, model.num_classes)

            def run(params, images, key):
                return predict(params, images, key)
        spec = jax.ShapeDtypeStruct((settings.batch, *model.shape, model.channels), jnp.float32)
        start = time.perf_counter()
        self._run = jax.jit(run).lower(model.params, spec, jax.random.PRNGKey(0)).compile()
        if model.diffusion:
            x0s = jax.ShapeDtypeStruct((settings.samples, 1, *model.shape, model.num_classes),
                                       jnp.float32)
            self._maps = jax.jit(ensemble_maps).lower(x0s).compile()
        self.compile_seconds = time.perf_counter() - start

    @property
    def calls(self) -> int:
        """Device calls per case."""
        return math.ceil(self.settings.samples / self.settings.batch)

    def final_x0(self, image: np.ndarray, key: jax.Array,
                 on_call: Callable[[], None] | None = None) -> jax.Array:
        """The N samples' final x0_hat (N, 1, X, Y, Z, C) of a diffusion model; call j uses
        `fold_in(key, j)` and keeps the first samples - j * batch of its batch."""
        s = self.settings
        images = jnp.broadcast_to(jnp.asarray(image, jnp.float32)[None, ..., None],
                                  (s.batch, *image.shape, self.model.channels))
        finals = []
        for j in range(self.calls):
            out = self._run(self.model.params, images, jax.random.fold_in(key, j))
            finals.append(out[: min(s.batch, s.samples - j * s.batch)])
            if on_call is not None:
                on_call()
        return jnp.concatenate(finals)[:, None]

    def predict(self, image: np.ndarray, key: jax.Array,
                on_call: Callable[[], None] | None = None, *,
                keep_samples: bool = False) -> CaseMaps:
        """Label (and with N > 1 entropy and disagreement, and with `keep_samples` the mean
        probabilities and the sample labels) of a prepared image (X, Y, Z)."""
        if tuple(image.shape) != self.model.shape:
            raise PredictError(f"prepared image {image.shape} is not the model's shape "
                               f"{self.model.shape}")
        if not self.model.diffusion:
            images = jnp.asarray(image, jnp.float32)[None, ..., None]
            label = np.asarray(self._run(self.model.params, images, key))[0]
            if on_call is not None:
                on_call()
            return CaseMaps(label.astype(np.int32), None, None)
        finals = self.final_x0(image, key, on_call)
        label, entropy, disagreement = (np.asarray(a)[0] for a in self._maps(finals))
        if self.settings.samples == 1:
            return CaseMaps(label, None, None)
        if not keep_samples:
            return CaseMaps(label, entropy, disagreement)
        probs = np.asarray(ensemble_probabilities(finals))[0]
        samples = np.asarray(jnp.argmax(finals, axis=-1))[:, 0].astype(np.int32)
        return CaseMaps(label, entropy, disagreement, probs, samples)


# ---------------------------------------------------------------------------------------------
# Inputs


def _stem(path: Path) -> str:
    for suffix in _NIFTI_SUFFIXES:
        if path.name.endswith(suffix):
            return path.name[: -len(suffix)]
    return path.name


def list_cases(inputs: str | os.PathLike) -> dict[str, list[Path]]:
    """Case name -> its files, sorted by name. A file is one case (a non-NIfTI name included,
    so that its error names it); a folder gives its `.nii`/`.nii.gz` files, `<case>_0000` being
    channel 0 of `<case>` (nnU-Net) and `<case>_0001`, ... its further channels."""
    path = Path(inputs)
    if path.is_file():
        stem = _stem(path)
        return {stem[:-5] if stem.endswith("_0000") else stem: [path]}
    if not path.is_dir():
        raise PredictError(f"--input {path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(_NIFTI_SUFFIXES))
    if not files:
        raise PredictError(f"--input {path}: no .nii or .nii.gz files")
    stems = {f: _stem(f) for f in files}
    nnunet = {s[:-5] for s in stems.values() if s.endswith("_0000")}
    cases: dict[str, list[Path]] = {}
    for f, stem in stems.items():
        match = _CHANNEL.fullmatch(stem)
        case = match["case"] if match and match["case"] in nnunet else stem
        cases.setdefault(case, []).append(f)
    return dict(sorted(cases.items()))


def _check_channels(files: list[Path], channels: int) -> None:
    """One file per case, with the model's channel count (a 4D file's last axis)."""
    names = ", ".join(f.name for f in files)
    if len(files) > 1:
        raise PredictError(f"{names}: {len(files)} files for one case (channels or the same "
                           f"case twice), but the model was trained on {channels} image channel")
    try:
        shape = nib.load(str(files[0])).shape
    except Exception:  # not NIfTI: `prepare_volume` reports it, naming the file
        return
    if len(shape) == 4 and shape[3] != channels:
        raise PredictError(f"{files[0]}: {shape[3]} channels (shape {tuple(shape)}), but the "
                           f"model was trained on {channels} image channel")


# ---------------------------------------------------------------------------------------------
# Outputs


def _no_room(err: OSError, path: Path) -> OSError:
    """`err` as an `OutputWriteError` naming `path` when it is a failure for lack of room
    (full disk, quota, file-size limit: the failed write names no file), else `err`."""
    code = no_room_errno(err)
    if code is None:
        return err
    error = OutputWriteError(f"cannot write {path}: {no_room_reason(code)}; the file is left "
                             "as it was")
    error.errno = code
    return error


def _save_atomic(image: nib.Nifti1Image, path: Path) -> None:
    """nib.save under a temporary name in the same folder, then an atomic rename: a file of an
    earlier run stays whole until the new one is complete."""
    tmp = path.with_name(f".{path.name.removesuffix('.nii.gz')}.partial.nii.gz")
    try:
        nib.save(image, str(tmp))
        os.replace(tmp, path)
    except OSError as err:
        raise _no_room(err, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_json_atomic(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    except OSError as err:
        raise _no_room(err, path) from None
    finally:
        tmp.unlink(missing_ok=True)


def labels_json(model: TrainedModel, settings: Settings) -> dict:
    """`labels.json`: label value -> class name, and what produced the files."""
    names = ["background", *model.class_names]
    return {"labels": {str(i): name for i, name in enumerate(names)}, "model": model.source,
            "method": model.config.method, **dataclasses.asdict(settings),
            "entropy": "nats, of the mean of the samples' probabilities",
            "disagreement": "fraction of samples whose label differs from the ensemble's"}


@dataclasses.dataclass
class CaseResult:
    """One case of a `predict_volumes` run: its files, outputs, seconds, or the error."""

    case: str
    inputs: list[Path]
    outputs: list[Path] = dataclasses.field(default_factory=list)
    seconds: float = math.nan
    error: str | None = None


@dataclasses.dataclass
class PredictReport:
    """All cases of a run, the one compilation's seconds and the settings used."""

    cases: list[CaseResult]
    compile_seconds: float
    settings: Settings
    #: With `labels`: the sample-set scores of the predicted cases and the files written.
    scores: UncertaintyScores | None = None
    score_files: list[Path] = dataclasses.field(default_factory=list)

    @property
    def scores_line(self) -> str | None:
        """The one-line summary of the scores against the reference labels, or None."""
        if self.scores is None:
            return None
        return reference.summary_line(self.scores, self.score_files[0] if self.score_files
                                      else Path("(not written)"))

    @property
    def failures(self) -> list[CaseResult]:
        return [c for c in self.cases if c.error is not None]

    def summary(self) -> str:
        """Per-case timing table and the failures, one line each."""
        width = max([len(c.case) for c in self.cases] + [4])
        lines = [f"compiled once in {self.compile_seconds:.1f} s", f"{'case':<{width}}  seconds"]
        for c in self.cases:
            if c.error is None:
                lines.append(f"{c.case:<{width}}  {c.seconds:7.2f}  "
                             f"{', '.join(p.name for p in c.outputs)}")
            else:
                lines.append(f"{c.case:<{width}}  {'-':>7}  FAILED: {c.error}")
        done = [c.seconds for c in self.cases if c.error is None]
        if done:
            lines.append(f"{len(done)} of {len(self.cases)} cases, mean {np.mean(done):.2f} s "
                         "per case")
        return "\n".join(lines)


def _predict_case(predictor: CasePredictor, files: list[Path], case: str, out_dir: Path,
                  key: jax.Array, bar: tqdm, label: Path | None = None,
                  scores: UncertaintyScores | None = None) -> list[Path]:
    model = predictor.model
    _check_channels(files, model.channels)
    image, geometry = prepare_volume(files[0], model.preparation["preprocessing"],
                                     name=str(files[0]))
    # The reference before the sampling: a bad label file fails the case at once.
    truth = (None if label is None else
             reference.reference_on_grid(label, str(files[0]), geometry, model.num_classes))
    bar.update()
    maps = predictor.predict(image, key, on_call=bar.update, keep_samples=truth is not None)
    if truth is not None:
        scores.add(case, model.class_names, maps.probs, truth, maps.entropy, maps.disagreement,
                   maps.sample_labels, image)
    outputs = []
    for suffix, values in ((ENTROPY_SUFFIX, maps.entropy),
                           (DISAGREEMENT_SUFFIX, maps.disagreement)):
        if values is not None:
            outputs.append(out_dir / f"{case}{suffix}.nii.gz")
            _save_atomic(restore_map(values, geometry), outputs[-1])
    # The label last: its presence means the case is complete.
    outputs.insert(0, out_dir / f"{case}.nii.gz")
    _save_atomic(restore_label(maps.label, geometry), outputs[0])
    bar.update()
    return outputs


def predict_volumes(model: TrainedModel, inputs: str | os.PathLike, out_dir: str | os.PathLike,
                    *, samples: int = 1, steps: int | None = None, sampler: str | None = None,
                    batch: int | None = None, seed: int = 0,
                    progress: bool = True,
                    labels: str | os.PathLike | None = None) -> PredictReport:
    """Predict every case of `inputs` (a NIfTI file or a folder, `list_cases`) into `out_dir`.

    A case that fails (not a 3D NIfTI, NaN voxels, wrong channel count; with `labels` a label
    file off the image's grid or with values outside the class list) is reported in the
    returned `PredictReport.failures` and the others are still predicted; bad options or an
    empty input raise `PredictError`.

    labels: reference label maps (`reference.reference_files`: a file for a one-case input, a
      folder matched by case name); each case's N >= 2 samples are scored against its label on
      the prepared grid with the trial's scorer, written to `record.ARTIFACT_UNCERTAINTY` (and
      the reliability bins) in `out_dir` (`PredictReport.scores`, `scores_line`).
    """
    settings = resolve_settings(model, samples, steps, sampler, batch)
    cases = list_cases(inputs)
    if labels is not None:
        reference.check_samples(settings.samples)
    references = reference.reference_files(labels, cases) if labels is not None else {}
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise PredictError(f"--out {out} is a file, not a folder; nothing was written")
    out.mkdir(parents=True, exist_ok=True)
    predictor = CasePredictor(model, settings)
    _write_json_atomic(labels_json(model, settings), out / LABELS_JSON)
    key = jax.random.PRNGKey(seed)
    scores = UncertaintyScores() if references else None
    results = []
    for case, files in cases.items():
        result = CaseResult(case=case, inputs=files)
        start = time.perf_counter()
        with tqdm(total=predictor.calls + 2, desc=case, unit="step", file=sys.stderr,
                  disable=not progress) as bar:
            try:
                result.outputs = _predict_case(predictor, files, case, out, key, bar,
                                               references.get(case), scores)
                result.seconds = time.perf_counter() - start
            except (DataError, PredictError, OSError) as err:
                result.error = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        results.append(result)
    written = []
    if scores is not None and scores.rows:
        try:
            written = write_scores(scores, out)
        except OSError as err:
            raise _no_room(err, out / record.ARTIFACT_UNCERTAINTY) from None
    return PredictReport(cases=results, compile_seconds=predictor.compile_seconds,
                         settings=settings, scores=scores, score_files=written)
