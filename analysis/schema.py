"""The tidy results schema and the casting of MLflow params (strings) back to typed axis values.

MLflow stores every param as a string, so `"False"` is truthy and `"1000" < "5"`. The types and
the defaults come from the experiment config schema through the run record
(`diffseg3d.experiments.tracking.record.cast_value` / `config_default`), never from guessing on
the string.
"""

from __future__ import annotations

from typing import Any

from diffseg3d.experiments.tracking.record import PER_CASE_COLUMNS as RECORD_PER_CASE_COLUMNS
from diffseg3d.experiments.tracking.record import cast_value, config_default

# Columns of the tidy per-(run, case, class) frame, in order (docs/ARCHITECTURE.md, analysis).
TIDY_COLUMNS: tuple[str, ...] = (
    "run_id", "trial", "data_set", "method", "output", "recycling", "dice_loss", "train_steps",
    "seed", "case", "class", "dice", "hd95", "roi_voxels", "roi_mm3", "nsd", "nsd_tolerance_mm",
)

# Tidy column <- dotted config key (the MLflow param name). These are the axes of the paper grid.
AXIS_PARAMS: dict[str, str] = {
    "data_set": "data.name",
    "method": "method",
    "output": "diffusion.output",
    "recycling": "diffusion.recycling",
    "dice_loss": "loss.dice",
    "train_steps": "diffusion.train_steps",
    "seed": "seed",
}

# Axis params a run must state: a run that does not say which data set it scored is an error,
# while any other missing axis (e.g. a CSV sidecar without `loss.dice`) takes the config default.
REQUIRED_PARAMS: tuple[str, ...] = ("data.name",)

# Per-case CSV columns the tidy frame takes when present and fills with NaN otherwise (CSVs
# written before NSD was scored, or by tools that do not score it).
OPTIONAL_PER_CASE_COLUMNS: tuple[str, ...] = ("nsd",)

# Per-case CSV columns the tidy frame needs: the record's columns that are tidy columns (its
# other columns, e.g. `pred_empty`, are optional for per-case CSVs scored elsewhere).
PER_CASE_COLUMNS: tuple[str, ...] = tuple(
    c for c in RECORD_PER_CASE_COLUMNS if c in TIDY_COLUMNS and c not in OPTIONAL_PER_CASE_COLUMNS
)

# Tidy column <- dotted config key of run settings that qualify a metric rather than define a
# setting (not axes: they never split or pair runs); a missing param takes the config default.
RUN_PARAMS: dict[str, str] = {"nsd_tolerance_mm": "eval.nsd_tolerance_mm"}


def cast_param(dotted_key: str, raw: Any, *, source: str = "") -> Any:
    """Cast one param (an MLflow string, or a sidecar's JSON value) to the type its config field
    declares. Raises ValueError naming the source (run id or file), the key and the value."""
    if raw is None:
        raise ValueError(f"{source}: param {dotted_key!r} is missing")
    try:
        return cast_value(dotted_key, raw)
    except ValueError as err:  # ConfigError is a ValueError
        raise ValueError(f"{source}: {err}") from None


def run_params(params: dict[str, Any], *, source: str = "") -> dict[str, Any]:
    """`RUN_PARAMS` tidy columns from a run's flattened params (config default when missing)."""
    return {column: config_default(key) if params.get(key) is None
            else cast_param(key, params[key], source=source)
            for column, key in RUN_PARAMS.items()}


def axes_from_params(params: dict[str, Any], *, source: str = "") -> dict[str, Any]:
    """Tidy axis columns from a run's flattened params; a missing axis takes its config default,
    except `REQUIRED_PARAMS`."""
    axes = {}
    for column, key in AXIS_PARAMS.items():
        raw = params.get(key)
        if raw is None and key not in REQUIRED_PARAMS:
            axes[column] = config_default(key)
        else:
            axes[column] = cast_param(key, raw, source=source)
    return axes
