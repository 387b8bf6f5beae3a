"""A trained model on new NIfTI volumes: load it, predict, write labels in each input's own grid.

`load_model(MODEL, tracking_uri)` accepts
  - `runs:/<run_id>` (or `runs:/<run_id>/model`) or a bare run id: the run's artifacts
    `checkpoint/`, `config.yaml` and `preparation.json` (`record.ARTIFACT_*`) from the store at
    `tracking_uri` (default `MLFLOW_TRACKING_URI`), checked with `check_readable_store` first;
  - `models:/<name>/<version>`: the run of that registered model version;
  - a local trial folder `<out>/trials/<name>_<hash>/`: its newest `checkpoints/step_*/`, its
    `config.yaml` and `preparation.json` (written when the trial finishes);
  - a model bundle folder holding `checkpoint/`, `config.yaml`, `preparation.json`, or an MLflow
    pyfunc model folder (`MLmodel` + that bundle in `artifacts/`).
The parameters are those the trial was tested with: the checkpoint's, or with
`eval.checkpoint: best_val` those of the best validation step saved beside them.

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
import functools
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
from diffseg3d.core.data.inference import (
    PreparationRecipe,
    prepare_volume,
    restore_label,
    restore_map,
)
from diffseg3d.core.data.nifti_io import DataError
from diffseg3d.core.infer.ensemble import ensemble_maps
from diffseg3d.core.infer.sampling import SAMPLERS
from diffseg3d.core.train.checkpoint import FOLDER_STATE, CheckpointError, restore_checkpoint
from diffseg3d.core.train.state import create_train_state
from diffseg3d.experiments import build, record
from diffseg3d.experiments.config import Config, ConfigError, validate_config
from diffseg3d.experiments.layers import read_yaml
from diffseg3d.experiments.store_check import check_readable_store
from diffseg3d.experiments.trial_checkpoint import read_params
from tqdm import tqdm

#: Image channels every model of this project reads (the loader feeds images (B, *S, 1)).
IMAGE_CHANNELS = 1
#: The labels file written next to the predictions.
LABELS_JSON = "labels.json"
#: Suffixes of the outputs besides `<case>.nii.gz` (written when samples > 1).
ENTROPY_SUFFIX = "_entropy"
DISAGREEMENT_SUFFIX = "_disagreement"

_NIFTI_SUFFIXES = (".nii.gz", ".nii")
_RUN_ID = re.compile(r"[0-9a-f]{32}")
#: nnU-Net's channel suffix: `<case>_0000.nii.gz` is channel 0 of case `<case>`.
_CHANNEL = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")


class PredictError(ConfigError):
    """A model or input `predict` cannot use; the message names the model, file or option."""


# ---------------------------------------------------------------------------------------------
# The preparation record


def preparation_record(dataset_meta: dict) -> dict:
    """`record.ARTIFACT_PREPARATION` from a prepared data set's dataset.json contents."""
    return {
        "name": dataset_meta["name"],
        "class_names": list(dataset_meta["class_names"]),
        "spacing": [float(s) for s in dataset_meta["spacing"]],
        "shape": [int(s) for s in dataset_meta["shape"]],
        "preprocessing": dataset_meta.get("preprocessing"),
        "channels": IMAGE_CHANNELS,
    }


def read_preparation(path: Path) -> dict:
    """A `preparation.json` with every `record.PREPARATION_KEYS` key and a replayable
    `preprocessing` record; `PredictError` names the file and the fault."""
    if not path.is_file():
        raise PredictError(f"{path}: missing (a model trained before predict existed has no "
                           "preparation record)")
    try:
        prep = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PredictError(f"{path}: unreadable ({err})") from None
    if not isinstance(prep, dict):
        raise PredictError(f"{path}: expected a JSON object")
    missing = [k for k in record.PREPARATION_KEYS if k not in prep]
    if missing:
        raise PredictError(f"{path}: missing keys {missing}")
    try:
        PreparationRecipe.from_record(prep["preprocessing"], where=f"{path} preprocessing")
    except DataError as err:
        raise PredictError(str(err)) from None
    return prep


# ---------------------------------------------------------------------------------------------
# Loading a trained model


@dataclasses.dataclass(frozen=True)
class TrainedModel:
    """Config, trained parameters and preparation record of one model; `source` says where it
    was loaded from (shown in messages and `labels.json`)."""

    config: Config
    params: Any
    preparation: dict
    source: str

    @property
    def class_names(self) -> list[str]:
        """Foreground class names; index i is label value i + 1."""
        return list(self.preparation["class_names"])

    @property
    def num_classes(self) -> int:
        """Classes including background."""
        return len(self.class_names) + 1

    @property
    def shape(self) -> tuple[int, int, int]:
        """The prepared shape (X, Y, Z) every volume is cropped/padded to."""
        return tuple(int(s) for s in self.preparation["shape"])

    @property
    def channels(self) -> int:
        return int(self.preparation["channels"])

    @property
    def diffusion(self) -> bool:
        return self.config.method == "diffusion"


def restore_params(config: Config, preparation: dict, checkpoint_dir: Path) -> Any:
    """The trained parameters of a trial checkpoint folder (`<dir>/orbax`, a `TrainState`)."""
    net = build.model(config, len(preparation["class_names"]) + 1)
    tx, _ = build.optimizer(config)
    shape = (1, *(int(s) for s in preparation["shape"]), int(preparation["channels"]))
    init = functools.partial(create_train_state, net, tx, image_shape=shape,
                             diffusion=net.diffusion)
    target = jax.eval_shape(init, jax.random.PRNGKey(0))
    try:
        state, _ = restore_checkpoint(Path(checkpoint_dir) / FOLDER_STATE, target)
    except (CheckpointError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PredictError(f"{checkpoint_dir}: unreadable checkpoint ({first})") from None
    return _tested_params(Path(checkpoint_dir), state.params)


def _tested_params(checkpoint_dir: Path, last: Any) -> Any:
    """The parameters the trial was tested with: those of `best_step` (`record.BEST_PARAMS`)
    when `eval.checkpoint: best_val` chose an earlier step than the checkpoint's, else `last`."""
    meta_path = checkpoint_dir / record.TRIAL_JSON
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise PredictError(f"{meta_path}: unreadable ({err})") from None
    best = meta.get("best_step")
    if not best or best == meta.get("step"):
        return last
    return read_params(checkpoint_dir / record.BEST_PARAMS, last)


def load_bundle(config_path: Path, preparation_path: Path, checkpoint_dir: Path,
                source: str) -> TrainedModel:
    """A `TrainedModel` from its three files: config YAML, preparation JSON, checkpoint folder."""
    config = validate_config(read_yaml(config_path), source=str(config_path))
    preparation = read_preparation(Path(preparation_path))
    if not (Path(checkpoint_dir) / FOLDER_STATE).is_dir():
        raise PredictError(f"{checkpoint_dir}: not a checkpoint folder (no {FOLDER_STATE}/)")
    params = restore_params(config, preparation, Path(checkpoint_dir))
    return TrainedModel(config=config, params=params, preparation=preparation, source=source)


def _load_folder(folder: Path) -> TrainedModel:
    """A trial folder (`checkpoints/step_*`), a bundle (`checkpoint/`) or a pyfunc model folder
    (`MLmodel`, bundle in `artifacts/`)."""
    if (folder / "MLmodel").is_file():
        folder = folder / "artifacts"
    if (folder / "checkpoints").is_dir():
        steps = sorted((folder / "checkpoints").glob("step_*"))
        if not steps:
            raise PredictError(f"{folder / 'checkpoints'}: no step_* checkpoint folder")
        checkpoint = steps[-1]
    elif (folder / record.ARTIFACT_CHECKPOINT).is_dir():
        checkpoint = folder / record.ARTIFACT_CHECKPOINT
    else:
        raise PredictError(f"{folder}: not a trial folder (no checkpoints/) nor a model folder "
                           f"(no {record.ARTIFACT_CHECKPOINT}/)")
    return load_bundle(folder / record.ARTIFACT_CONFIG, folder / record.ARTIFACT_PREPARATION,
                       checkpoint, source=str(folder))


def _tracking_uri(tracking_uri: str | None, model: str) -> str:
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise PredictError(f"--model {model}: an MLflow model needs a tracking store; give "
                           "--tracking-uri or set MLFLOW_TRACKING_URI")
    check_readable_store(uri)
    return uri


def _load_run(run_id: str, uri: str, source: str) -> TrainedModel:
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(uri).get_run(run_id)
    except MlflowException:
        raise PredictError(f"--model {source}: no run {run_id} in the store {uri}") from None
    names = (record.ARTIFACT_CONFIG, record.ARTIFACT_PREPARATION, record.ARTIFACT_CHECKPOINT)
    with tempfile.TemporaryDirectory(prefix="diffseg3d_model_") as tmp:
        paths = []
        for name in names:
            try:
                paths.append(Path(download_artifacts(run_id=run_id, artifact_path=name,
                                                     dst_path=tmp, tracking_uri=uri)))
            except (MlflowException, OSError):
                raise PredictError(f"--model {source}: run {run_id} has no artifact {name!r} "
                                   "(not a finished trial, or trained before predict "
                                   "existed)") from None
        return load_bundle(*paths, source=source)


def _registered_run(name: str, version: str, uri: str, source: str) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        found = MlflowClient(uri).get_model_version(name, version)
    except MlflowException:
        raise PredictError(f"--model {source}: no registered model {name!r} version {version!r} "
                           f"in {uri}") from None
    if not found.run_id:
        raise PredictError(f"--model {source}: the version was not registered from a run")
    return found.run_id


def load_model(model: str | os.PathLike, tracking_uri: str | None = None) -> TrainedModel:
    """The `TrainedModel` named by MODEL (module docstring); `PredictError` in one line when it
    is missing or unreadable, or its store does not exist."""
    text = os.fspath(model)
    if text.startswith("runs:/"):
        parts = text.removeprefix("runs:/").strip("/").split("/")
        if not _RUN_ID.fullmatch(parts[0]) or parts[1:] not in ([], [record.ARTIFACT_MODEL]):
            raise PredictError(f"--model {text}: expected runs:/<run_id> (32 hex digits)")
        return _load_run(parts[0], _tracking_uri(tracking_uri, text), text)
    if text.startswith("models:/"):
        parts = text.removeprefix("models:/").strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            raise PredictError(f"--model {text}: expected models:/<name>/<version>")
        uri = _tracking_uri(tracking_uri, text)
        return _load_run(_registered_run(*parts, uri, text), uri, text)
    path = Path(text)
    if path.is_dir():
        return _load_folder(path)
    if _RUN_ID.fullmatch(text):
        return _load_run(text, _tracking_uri(tracking_uri, text), text)
    raise PredictError(f"--model {text}: no such folder, and not runs:/<run_id>, "
                       "models:/<name>/<version> or a run id")


# ---------------------------------------------------------------------------------------------
# One compiled predictor for every case


@dataclasses.dataclass(frozen=True)
class CaseMaps:
    """One case on the prepared grid: label (X, Y, Z) int32; entropy and disagreement (X, Y, Z)
    float32 when samples > 1, else None."""

    label: np.ndarray
    entropy: np.ndarray | None
    disagreement: np.ndarray | None


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
                on_call: Callable[[], None] | None = None) -> CaseMaps:
        """Label (and with N > 1 entropy and disagreement) of a prepared image (X, Y, Z)."""
        if tuple(image.shape) != self.model.shape:
            raise PredictError(f"prepared image {image.shape} is not the model's shape "
                               f"{self.model.shape}")
        if not self.model.diffusion:
            images = jnp.asarray(image, jnp.float32)[None, ..., None]
            label = np.asarray(self._run(self.model.params, images, key))[0]
            if on_call is not None:
                on_call()
            return CaseMaps(label.astype(np.int32), None, None)
        label, entropy, disagreement = (np.asarray(a)[0] for a in
                                        self._maps(self.final_x0(image, key, on_call)))
        if self.settings.samples == 1:
            return CaseMaps(label, None, None)
        return CaseMaps(label, entropy, disagreement)


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


def _save_atomic(image: nib.Nifti1Image, path: Path) -> None:
    """nib.save under a temporary name in the same folder, then an atomic rename."""
    tmp = path.with_name(f".{path.name.removesuffix('.nii.gz')}.partial.nii.gz")
    try:
        nib.save(image, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_json_atomic(data: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


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
                  key: jax.Array, bar: tqdm) -> list[Path]:
    model = predictor.model
    _check_channels(files, model.channels)
    image, geometry = prepare_volume(files[0], model.preparation["preprocessing"],
                                     name=str(files[0]))
    bar.update()
    maps = predictor.predict(image, key, on_call=bar.update)
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
                    progress: bool = True) -> PredictReport:
    """Predict every case of `inputs` (a NIfTI file or a folder, `list_cases`) into `out_dir`.

    A case that fails (not a 3D NIfTI, NaN voxels, wrong channel count) is reported in the
    returned `PredictReport.failures` and the others are still predicted; bad options or an
    empty input raise `PredictError`.
    """
    settings = resolve_settings(model, samples, steps, sampler, batch)
    cases = list_cases(inputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    predictor = CasePredictor(model, settings)
    _write_json_atomic(labels_json(model, settings), out / LABELS_JSON)
    key = jax.random.PRNGKey(seed)
    results = []
    for case, files in cases.items():
        result = CaseResult(case=case, inputs=files)
        start = time.perf_counter()
        with tqdm(total=predictor.calls + 2, desc=case, unit="step", file=sys.stderr,
                  disable=not progress) as bar:
            try:
                result.outputs = _predict_case(predictor, files, case, out, key, bar)
                result.seconds = time.perf_counter() - start
            except (DataError, PredictError, OSError) as err:
                result.error = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        results.append(result)
    return PredictReport(cases=results, compile_seconds=predictor.compile_seconds,
                         settings=settings)
