"""The schema of a grid file (`experiments/grids/*.yaml`): its comparisons, seeds, data sets and
shared base. `grid.py` reads, checks and expands it into trials (the YAML format is shown
there)."""

from __future__ import annotations

from typing import Any

from diffseg3d.core.data.safe_name import check_safe_name
from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Default of `Grid.max_trials`: the paper's grids expand to 9 trials, their seed sweeps to tens.
DEFAULT_MAX_TRIALS = 1000


class Comparison(BaseModel):
    """One comparison of a paper table: the axes varied and the data sets it runs on."""

    model_config = ConfigDict(extra="forbid")

    table: str = Field(description="Paper table label, e.g. '1', '2', '3a'.")
    axes: dict[str, list[Any]] = Field(
        description="Dotted config key -> values; trials are the Cartesian product."
    )
    data_sets: list[str] | None = Field(
        None, description="Subset of the grid's data sets (default: all of them)."
    )
    base: dict = Field(
        {}, description="Partial config merged over the grid's base for this comparison only."
    )


class Grid(BaseModel):
    """A parsed grid file (includes resolved: every comparison carries its full base)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        description="Grid name: the MLflow experiment and parent run label, and the folder of "
        "its Tune experiment; a safe file name (letters, digits, `._+-=`)."
    )
    description: str = Field("", description="Free text.")
    seeds: list[int] = Field([0], min_length=1, description="Seeds; each trial runs per seed.")
    data_sets: dict[str, str] = Field(
        {}, description="Data set label -> default prepared folder (relative: to the cwd)."
    )
    base: dict = Field({}, description="Partial config shared by every comparison.")
    comparisons: list[Comparison] = Field([], description="Comparisons feeding paper tables.")
    include: list[str] = Field(
        [], description="Other grid files (relative to this one) whose comparisons are added."
    )
    max_trials: int = Field(
        DEFAULT_MAX_TRIALS, ge=1,
        description="Most trial configurations (data sets x axis values x seeds, summed over "
        "comparisons, before duplicates merge) the grid may expand to; a larger grid is refused "
        "before anything runs, so a typo in an axis cannot start a million trials. Raise it to "
        "run a larger grid on purpose. The top grid file's value applies to its includes.",
    )

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        return check_safe_name(name, what="name")
