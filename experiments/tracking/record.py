"""The run record: what a trial writes and the analysis reads, named in one place.

One trial is one MLflow child run under its grid's parent run:

    tags       `TAG_*` below (the trial's name, config hash, paper tables, parent run, ...)
    params     `flatten(config)`: dotted config key -> string (`data.batch_size` -> "8")
    metrics    loss parts, `val_dice`, and the `test_*` means after training
    artifacts  `ARTIFACT_PER_CASE` (columns `PER_CASE_COLUMNS`), `ARTIFACT_CONFIG`,
               `ARTIFACT_CHECKPOINT/` (orbax state + `TRIAL_JSON`), `ARTIFACT_PREDICTIONS/`,
               `ARTIFACT_PREPARATION`, `ARTIFACT_MODEL/` (what `diffseg3d predict` loads)

The experiments write it (`tracking`, `trial`); the analysis reads it (`analysis.collect`,
`analysis.schema`) through this module and `grid` only. MLflow keeps every param as a string,
so `cast_value` turns it back into the type the config schema declares for its key.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from diffseg3d.core.metrics.evaluate import ROW_KEYS
from diffseg3d.core.metrics.sample_set import SAMPLE_SET_KEYS
from diffseg3d.experiments.config.errors import ConfigError
from diffseg3d.experiments.config.schema import Config
from pydantic import BaseModel, TypeAdapter, ValidationError

# ---------------------------------------------------------------------------------------------
# MLflow tags

#: The parent run's id on a child run; MLflow's own tag, which nests the run in the UI.
TAG_PARENT = "mlflow.parentRunId"
#: Readable trial name of a trial run (also its MLflow run name).
TAG_TRIAL = "diffseg3d.trial"
#: `config.config_hash` of the trial's config: equal iff two trials compute the same thing.
TAG_CONFIG_HASH = "diffseg3d.config_hash"
#: Comma-separated paper tables the trial feeds, e.g. "1,3a" (`Config.tables`).
TAG_TABLES = "diffseg3d.tables"
#: What a run is: `KIND_GRID` on parent runs, `KIND_TRIAL` on trial runs.
TAG_KIND = "diffseg3d.kind"
#: Value of `TAG_KIND` on a grid's parent run.
KIND_GRID = "grid"
#: Value of `TAG_KIND` on a trial's run.
KIND_TRIAL = "trial"
#: Grid name on a parent run.
TAG_GRID = "diffseg3d.grid"
#: Hash of the expanded grid on a parent run (an interrupted grid reuses its parent run).
TAG_GRID_HASH = "diffseg3d.grid_hash"
#: On a soft-deleted trial run: the id of the run that replaced it (a restart from step 0).
TAG_SUPERSEDED_BY = "diffseg3d.superseded_by"
#: On a parent run when the grid ends: comma-separated names of trials that did not finish, "-"
#: when none.
TAG_FAILED_TRIALS = "diffseg3d.failed_trials"
#: sha256 (16 hex) over the trained parameters' bytes: equal iff bit-identical weights.
TAG_PARAMS_DIGEST = "diffseg3d.params_digest"
#: Parameters the test split was scored with: `<step> (<eval.checkpoint>)`, e.g. `7500 (best_val)`
#: or `12500 (last)`; the step is also the metric `test_checkpoint_step`.
TAG_TEST_CHECKPOINT = "diffseg3d.test_checkpoint"
#: The values a profile or `--set` replaced, "; "-joined `Config.overridden` entries
#: (`train.steps: 500 -> 20 (profile smoke)`); set only when something was replaced.
TAG_OVERRIDDEN = "diffseg3d.overridden"
#: On a trial run that ended FAILED: why, `<error type>: <message>` (e.g. the step and loss
#: parts of a non-finite training step, `train.stop_on_nonfinite`), at most
#: `FAILURE_TAG_CHARS` characters.
TAG_FAILURE = "diffseg3d.failure"
FAILURE_TAG_CHARS = 5000


def failure_reason(err: BaseException) -> str:
    """`TAG_FAILURE`'s value for `err`: its type and message, cut to `FAILURE_TAG_CHARS`."""
    text = str(err).strip()
    return (f"{type(err).__name__}: {text}" if text else type(err).__name__)[:FAILURE_TAG_CHARS]

# ---------------------------------------------------------------------------------------------
# Artifacts of a trial run

#: Per-case, per-class test metrics, one row per (case, foreground class), CSV.
ARTIFACT_PER_CASE = "per_case_metrics.csv"
#: The resolved config as YAML (`config.to_yaml`); loads back to an equal config.
ARTIFACT_CONFIG = "config.yaml"
#: Folder with the final checkpoint: orbax state and `TRIAL_JSON`.
ARTIFACT_CHECKPOINT = "checkpoint"
#: Folder with saved test predictions: `<case>.nii.gz` and a `<case>.png` montage.
ARTIFACT_PREDICTIONS = "predictions"
#: What `diffseg3d predict` replays on a new volume, JSON (also in the trial's folder): the data
#: set's `name`, `class_names` (foreground), `spacing`, `shape`, its dataset.json `preprocessing`
#: record (`core.data.inference.PreparationRecipe.from_record`) and `channels` (image channels
#: the model reads).
ARTIFACT_PREPARATION = "preparation.json"
#: Keys of `ARTIFACT_PREPARATION`.
PREPARATION_KEYS: tuple[str, ...] = ("name", "class_names", "spacing", "shape", "preprocessing",
                                     "channels")
#: MLflow pyfunc model folder (`experiments.tracking.pyfunc_model`): `mlflow.pyfunc.load_model(
#: "runs:/<run_id>/model")`; its artifacts are the checkpoint, config and preparation record.
ARTIFACT_MODEL = "model"
#: Image channels every model of this project reads (the loader feeds images (B, *S, 1)).
IMAGE_CHANNELS = 1


def preparation_record(dataset_meta: dict) -> dict:
    """`ARTIFACT_PREPARATION` from a prepared data set's dataset.json contents."""
    return {
        "name": dataset_meta["name"],
        "class_names": list(dataset_meta["class_names"]),
        "spacing": [float(s) for s in dataset_meta["spacing"]],
        "shape": [int(s) for s in dataset_meta["shape"]],
        "preprocessing": dataset_meta.get("preprocessing"),
        "channels": IMAGE_CHANNELS,
    }


#: Folder with one per-case CSV per `eval.samplers` variant, `<variant>.csv` (columns
#: `PER_CASE_COLUMNS`): the same parameters and test key, sampled another way (Table 4).
ARTIFACT_SAMPLING = "sampling"

#: Columns of `ARTIFACT_PER_CASE`, in order; defined by `core.metrics.evaluate` (its row keys).
PER_CASE_COLUMNS: tuple[str, ...] = tuple(ROW_KEYS)

#: Sample-set, calibration and error-detection scores of the test split, one row per (case,
#: foreground class), CSV (`trial.uncertainty`): diffusion trials with `eval.samples` >= 2 (the
#: ensemble) and U-Net trials (their softmax); columns `UNCERTAINTY_COLUMNS`.
ARTIFACT_UNCERTAINTY = "uncertainty_per_case.csv"
#: Per-case columns of `ARTIFACT_UNCERTAINTY`, repeated on each class row of their case.
UNCERTAINTY_CASE_COLUMNS: tuple[str, ...] = (
    "ece", "ece_all", "auroc_entropy", "ap_entropy", "auroc_disagreement", "ap_disagreement",
    "region_voxels", "error_voxels")
#: Columns of `ARTIFACT_UNCERTAINTY`, in order (`core.metrics.sample_set.SAMPLE_SET_KEYS`).
UNCERTAINTY_COLUMNS: tuple[str, ...] = (
    "case", "class", "samples", "dice_ensemble", *SAMPLE_SET_KEYS, *UNCERTAINTY_CASE_COLUMNS)
#: The split's reliability diagram, CSV: one row per confidence bin (`core.metrics.calibration`)
#: with the voxels of every case's evaluation region pooled; columns `RELIABILITY_COLUMNS`.
ARTIFACT_RELIABILITY = "reliability.csv"
RELIABILITY_COLUMNS: tuple[str, ...] = ("bin", "low", "high", "count", "confidence", "accuracy")
#: One slice of the first test case, NumPy `.npz` with `image, label, pred, entropy` (H, W).
ARTIFACT_UNCERTAINTY_SLICE = "uncertainty_slice.npz"
#: The device kind a trial ran on (`jax.devices()[0].device_kind`, e.g. `cpu`, `NVIDIA H100`).
TAG_DEVICE_KIND = "diffseg3d.device_kind"
#: What a trial cost (`trial.cost`), logged as metrics at the final step.
COST_METRICS: tuple[str, ...] = (
    "cost_train_step_flops", "cost_train_flops", "cost_train_seconds", "cost_eval_seconds",
    "cost_forward_flops", "cost_forward_passes", "cost_inference_flops_1",
    "cost_inference_seconds_1", "cost_inference_samples", "cost_inference_flops_ensemble",
    "cost_inference_seconds_ensemble")

# ---------------------------------------------------------------------------------------------
# Checkpoint metadata

#: JSON file inside each checkpoint folder: `{"mlflow_run_id", "step", "config_hash", "trial"}`,
#: which a resumed trial reads to reopen its MLflow run and check its config.
TRIAL_JSON = "trial.json"
#: Keys a `TRIAL_JSON` must hold to resume from it (`trial` is informative only). With
#: `eval.checkpoint: best_val` it also holds `best_step` and `best_val_dice` (the best validation
#: so far; `best_step` 0 = none yet), and the folder holds those parameters in `BEST_PARAMS`.
TRIAL_JSON_REQUIRED_KEYS: tuple[str, ...] = ("mlflow_run_id", "step", "config_hash")
#: NumPy `.npz` in a checkpoint folder: the parameters of `best_step`, leaves `leaf_<i>` in tree
#: order of `TrainState.params`.
BEST_PARAMS = "best_params.npz"

# ---------------------------------------------------------------------------------------------
# Params: config <-> MLflow strings


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_leaves(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _encode(value: Any) -> str:
    """Strings stay as they are; everything else is JSON (lists, bools as true/false)."""
    return value if isinstance(value, str) else json.dumps(value)


def flatten(config: Config) -> dict[str, str]:
    """Dotted key -> string value, sorted by key: `{"data.batch_size": "8",
    "model.channels": "[32, 64, 128, 256]", "diffusion.recycling": "true", ...}`."""
    leaves = _leaves(config.model_dump(mode="json"))
    return {key: _encode(leaves[key]) for key in sorted(leaves)}


def cast_value(dotted: str, value: Any) -> Any:
    """One param back as the typed value of `Config.field_type(dotted)`.

    A string is read in `flatten`'s encoding or Python's `str()` (e.g. `True`, `(0.9, 1.1)`,
    `None`);
    any other value (a JSON sidecar's `true`, `5`) is validated as it is, in pydantic's lax
    mode. Raises `ConfigError` (a ValueError) naming the key and the value.
    """
    annotation = Config.field_type(dotted)
    adapter = TypeAdapter(annotation)
    try:
        if not isinstance(value, str):
            return adapter.validate_python(value)
        if annotation is str:
            return value
        if value in ("null", "None") and type(None) in typing.get_args(annotation):
            return None  # an unset optional field: `flatten` writes JSON null
        if typing.get_origin(annotation) in (list, tuple):
            text = value.replace("(", "[").replace(")", "]").replace("'", '"')
            return adapter.validate_python(json.loads(text))
        return adapter.validate_python(value)
    except (ValidationError, json.JSONDecodeError) as err:
        raise ConfigError(f"param {dotted}={value!r} is not a valid {annotation}: {err}") from None


def config_default(dotted: str) -> Any:
    """The schema default of a dotted leaf key, e.g. `config_default("loss.dice") is True`."""
    Config.field_type(dotted)  # unknown keys: ConfigError naming the key
    value: Any = Config()
    for part in dotted.split("."):
        value = getattr(value, part)
    if isinstance(value, BaseModel):
        raise ConfigError(f"config key {dotted!r} is a section, not a leaf")
    return value
