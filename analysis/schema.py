"""The tidy results schema and the casting of MLflow params (strings) back to typed axis values.

MLflow stores every param as a string, so `"False"` is truthy and `"1000" < "5"`. The types come
from the experiment config schema (`diffseg3d.experiments.config.Config.field_type`, validated with
pydantic's lax mode, which accepts `"True"`/`"false"`/`"5"`), never from guessing on the string.
Until that schema is importable, a small explicit table of the axis keys stands in for it.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter, ValidationError

# Columns of the tidy per-(run, case, class) frame, in order (docs/ARCHITECTURE.md, analysis).
TIDY_COLUMNS: tuple[str, ...] = (
    "run_id", "trial", "data_set", "method", "output", "recycling", "dice_loss", "train_steps",
    "seed", "case", "class", "dice", "hd95", "roi_voxels", "roi_mm3",
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

# Stand-in for Config.field_type while the experiments schema is absent (same keys, same types).
_FALLBACK_TYPES: dict[str, Any] = {
    "data.name": str,
    "method": str,
    "diffusion.output": str,
    "diffusion.recycling": bool,
    "loss.dice": bool,
    "diffusion.train_steps": int,
    "seed": int,
}

# Defaults used when a run lacks an axis param (e.g. a CSV sidecar that omits `loss.dice`):
# the paper's default configuration (mask prediction, recycling, Dice loss, 5 training steps).
AXIS_DEFAULTS: dict[str, Any] = {
    "method": "diffusion",
    "diffusion.output": "x0",
    "diffusion.recycling": True,
    "loss.dice": True,
    "diffusion.train_steps": 5,
    "seed": 0,
}

# Columns of the per-case metrics CSV written by core.metrics.evaluate (extra columns are kept).
PER_CASE_COLUMNS: tuple[str, ...] = ("case", "class", "dice", "hd95", "roi_voxels", "roi_mm3")


@functools.cache
def field_type(dotted_key: str) -> Any:
    """Type of a dotted config key, from the experiments config schema when it exists."""
    try:
        from diffseg3d.experiments.config import Config
    except ImportError:
        Config = None
    if Config is not None and hasattr(Config, "field_type"):
        try:
            return Config.field_type(dotted_key)
        except (KeyError, AttributeError, ValueError):
            pass
    if dotted_key in _FALLBACK_TYPES:
        return _FALLBACK_TYPES[dotted_key]
    raise KeyError(f"unknown config key {dotted_key!r}: not in the experiments config schema")


def cast_param(dotted_key: str, raw: Any, *, source: str = "") -> Any:
    """Cast one MLflow param string to the type its config field declares.

    Delegates to `diffseg3d.experiments.config.cast_value` when that schema exists (so the
    analysis reads params exactly as the experiments wrote them); otherwise validates against
    the fallback table with pydantic's lax mode. Raises ValueError naming the source (run id or
    file), the key and the value on bad input.
    """
    if raw is None:
        raise ValueError(f"{source}: param {dotted_key!r} is missing")
    try:
        from diffseg3d.experiments.config import cast_value
    except ImportError:
        cast_value = None
    if cast_value is not None and isinstance(raw, str):
        try:
            return cast_value(dotted_key, raw)
        except ValueError as err:  # ConfigError is a ValueError
            raise ValueError(f"{source}: {err}") from None
    typ = field_type(dotted_key)
    try:
        return TypeAdapter(typ).validate_python(raw)
    except ValidationError as err:
        raise ValueError(
            f"{source}: param {dotted_key!r}={raw!r} is not a valid {typ}: "
            f"{err.errors()[0]['msg']}"
        ) from None


def axes_from_params(params: dict[str, Any], *, source: str = "") -> dict[str, Any]:
    """Tidy axis columns from a run's flattened params (missing axes take AXIS_DEFAULTS).

    `data.name` has no default: a run that does not say which data set it scored is an error.
    """
    axes = {}
    for column, key in AXIS_PARAMS.items():
        raw = params.get(key)
        if raw is None and key in AXIS_DEFAULTS:
            axes[column] = AXIS_DEFAULTS[key]
        else:
            axes[column] = cast_param(key, raw, source=source)
    return axes
