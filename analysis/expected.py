"""Trials a grid expects but the collected runs lack (runs that never started or never finished).

Failed runs are already listed by `collect`; a trial that has no run at all is invisible there,
so the grid definition is expanded (`diffseg3d.experiments.grid.expand`; `grid` and `record` are
the only experiments modules the analysis imports) and its trial names are compared with the
runs' `record.TAG_TRIAL` tags. Trial names do not depend on the profile, only on the data override.
"""

from __future__ import annotations

import os

import pandas as pd
from diffseg3d.experiments.grid import expand, load_grid, resolve_grid_path


def expected_trial_names(grid: str | os.PathLike, data_override: str | None = None,
                         seeds: list[int] | None = None) -> list[str]:
    """Names of every trial of `grid` (a YAML path or a grid name under experiments/grids);
    `seeds` replaces the grid's `seeds:` as `diffseg3d ablate --seeds` does."""
    loaded = load_grid(resolve_grid_path(grid))
    if seeds is not None:
        loaded = loaded.model_copy(update={"seeds": list(seeds)})
    return [t.name for t in expand(loaded, None, data_override)]


def missing_trials(expected: list[str], runs: pd.DataFrame) -> list[str]:
    """One line per expected trial without a collected run, saying whether any run exists.

    runs: `Collection.runs` (columns `trial`, `run_id`, `status`, `problem`).
    """
    lines = []
    for name in expected:
        mine = runs[runs["trial"] == name]
        if mine.empty:
            lines.append(f"{name}: no run in the experiment")
        elif mine["problem"].notna().all():
            states = ", ".join(f"{r.run_id} {r.status}" for r in mine.itertuples())
            lines.append(f"{name}: no usable run ({states})")
    return lines
