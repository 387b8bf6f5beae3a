"""Loading a trained model for `predict` and the pyfunc model.

`load_model(MODEL, tracking_uri)` accepts
  - `runs:/<run_id>` (or `runs:/<run_id>/model`) or a bare run id: the run's artifacts
    `checkpoint/`, `config.yaml` and `preparation.json` (`record.ARTIFACT_*`) from the store at
    `tracking_uri` (default `MLFLOW_TRACKING_URI`), checked with `check_readable_store` first;
  - `models:/<name>/<version>`: the run of that registered model version (its run, or the
    source run of the logged model it was registered from);
  - `models:/<model_id>` (`m-` + 32 hex digits): the source run of that MLflow logged model
    (the trial logs its model as one, `tracking.pyfunc_model`);
  - a local trial folder `<out>/trials/<name>_<hash>/`: its newest `checkpoints/step_*/`, its
    `config.yaml` and `preparation.json` (written when the trial finishes);
  - a model bundle folder holding `checkpoint/`, `config.yaml`, `preparation.json`, or an MLflow
    pyfunc model folder (`MLmodel` + that bundle in `artifacts/`).
The parameters are those the trial was tested with: the checkpoint's, or with
`eval.checkpoint: best_val` those of the best validation step saved beside them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import jax
from diffseg3d.core.data.inference import PreparationRecipe
from diffseg3d.core.data.nifti.io import DataError
from diffseg3d.core.train.checkpoint import FOLDER_STATE, CheckpointError, restore_checkpoint
from diffseg3d.core.train.state import create_train_state
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.layering import read_yaml
from diffseg3d.experiments.config.schema import Config, validate_config
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.tracking.store_check import check_readable_store
from diffseg3d.experiments.trial import build
from diffseg3d.experiments.trial.checkpoint import read_params

_RUN_ID = re.compile(r"[0-9a-f]{32}")
#: An MLflow 3 logged model id, `m-` and 32 hex digits.
_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")


class PredictError(ConfigError):
    """A model or input `predict` cannot use; the message names the model, file or option."""


# ---------------------------------------------------------------------------------------------
# The preparation record


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
    if found.run_id:
        return found.run_id
    if getattr(found, "model_id", None):  # registered from models:/<model_id>
        return _logged_model_run(found.model_id, uri, source)
    raise PredictError(f"--model {source}: the version was not registered from a run")


def _logged_model_run(model_id: str, uri: str, source: str) -> str:
    """The source run of an MLflow logged model (`models:/<model_id>`, as the trial logs it)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        found = MlflowClient(uri).get_logged_model(model_id)
    except MlflowException:
        raise PredictError(f"--model {source}: no logged model {model_id!r} in {uri}") from None
    if not found.source_run_id:
        raise PredictError(f"--model {source}: the logged model has no source run")
    return found.source_run_id


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
        if len(parts) == 1 and _MODEL_ID.fullmatch(parts[0]):
            uri = _tracking_uri(tracking_uri, text)
            return _load_run(_logged_model_run(parts[0], uri, text), uri, text)
        if len(parts) != 2 or not all(parts):
            raise PredictError(f"--model {text}: expected models:/<name>/<version> or "
                               "models:/<model_id>")
        uri = _tracking_uri(tracking_uri, text)
        return _load_run(_registered_run(*parts, uri, text), uri, text)
    path = Path(text)
    if path.is_dir():
        return _load_folder(path)
    if _RUN_ID.fullmatch(text):
        return _load_run(text, _tracking_uri(tracking_uri, text), text)
    raise PredictError(f"--model {text}: no such folder, and not runs:/<run_id>, "
                       "models:/<name>/<version> or a run id")
