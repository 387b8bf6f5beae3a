"""Run-level diffusion test metrics per setting: Dice along the sampling chain and ensembles.

From `Collection.run_metrics` (long `run_id, metric, value`) and the runs with their setting:

- `step_dice`: mean Dice of each sampling step's x0_hat (`test_dice_step_<k>`, k = 1..K in
  sampling order, k = K being the prediction), mean and std over runs (seeds) per data set and
  setting: does recycling (paper 3.2) make the early steps better?
- `ensemble_dice`: the 1-sample `test_dice` next to the N-sample ensemble's
  `test_dice_ensemble`, and the Spearman r between per-case mean voxel entropy and Dice
  (`test_uncertainty_dice_spearman`), mean over runs: is the uncertainty informative?

Both are empty frames when no run logged those metrics (U-Net runs, older runs, `eval.samples`
1), and the report then skips their outputs with a reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from diffseg3d.analysis.summary import markdown_table
from diffseg3d.analysis.table_data import data_set_order
from diffseg3d.analysis.tables.sampling import ensemble_frame, sampling_steps_frame

STEP_PREFIX = "test_dice_step_"
STEP_COLUMNS: tuple[str, ...] = ("data_set", "setting", "step", "mean", "std", "n_runs")
ENSEMBLE_COLUMNS: tuple[str, ...] = (
    "data_set", "setting", "samples", "dice_single", "dice_ensemble", "spearman_r", "n_runs",
)


def _with_setting(run_metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    keep = runs.dropna(subset=["setting"])[["run_id", "data_set", "setting"]]
    return run_metrics.merge(keep, on="run_id")


def _sorted(table: pd.DataFrame, extra: list[str]) -> pd.DataFrame:
    order = table["data_set"].map(data_set_order)
    return (table.assign(_order=order).sort_values(["_order", "setting", *extra])
            .drop(columns="_order").reset_index(drop=True))


def step_dice(run_metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`STEP_COLUMNS`: per data set, setting and sampling step k (1-based), the mean and sample
    std (ddof 1; NaN for one run) over runs of `test_dice_step_<k>`.

    run_metrics: `run_id, metric, value`; runs: `run_id, data_set, setting` (None: not collected).
    """
    rows = _with_setting(run_metrics, runs)
    rows = rows[rows["metric"].str.startswith(STEP_PREFIX)]
    if rows.empty:
        return pd.DataFrame(columns=list(STEP_COLUMNS))
    rows = rows.assign(step=rows["metric"].str.removeprefix(STEP_PREFIX).astype(int))
    grouped = rows.groupby(["data_set", "setting", "step"])["value"]
    table = pd.DataFrame({"mean": grouped.mean(), "std": grouped.std(ddof=1),
                          "n_runs": grouped.count()}).reset_index()
    return _sorted(table, ["step"]).loc[:, list(STEP_COLUMNS)]


def ensemble_dice(run_metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`ENSEMBLE_COLUMNS`: per data set, setting and ensemble size N, the mean over runs of the
    1-sample Dice, the N-sample ensemble Dice and the entropy-Dice Spearman r; only runs that
    logged an ensemble (`test_dice_ensemble`)."""
    rows = _with_setting(run_metrics, runs)
    wide = rows.pivot_table(index=["run_id", "data_set", "setting"], columns="metric",
                            values="value", aggfunc="first", dropna=False)
    if "test_dice_ensemble" not in wide.columns:
        return pd.DataFrame(columns=list(ENSEMBLE_COLUMNS))
    wide = wide[wide["test_dice_ensemble"].notna()].reset_index()
    for column in ("test_dice", "test_ensemble_samples", "test_uncertainty_dice_spearman"):
        if column not in wide.columns:
            wide[column] = np.nan
    wide["samples"] = wide["test_ensemble_samples"].fillna(0).astype(int)
    grouped = wide.groupby(["data_set", "setting", "samples"])
    table = pd.DataFrame({
        "dice_single": grouped["test_dice"].mean(),
        "dice_ensemble": grouped["test_dice_ensemble"].mean(),
        "spearman_r": grouped["test_uncertainty_dice_spearman"].mean(),
        "n_runs": grouped["test_dice_ensemble"].count(),
    }).reset_index()
    return _sorted(table, ["samples"]).loc[:, list(ENSEMBLE_COLUMNS)]


def summary_section(steps: pd.DataFrame, ensembles: pd.DataFrame) -> str:
    """Markdown for summary.md: Dice per sampling step and, when present, 1 vs N samples."""
    parts = ["## Diffusion sampling: Dice per step and ensembles\n"]
    if steps.empty:
        parts.append("No run logged Dice per sampling step (`test_dice_step_<k>`).\n")
    else:
        parts.append("Mean test Dice of the label map of each sampling step's x0_hat (step 1 from "
                     "pure noise, the last step is the prediction), mean over seeds.\n\n"
                     + markdown_table(sampling_steps_frame(steps).set_index("Data set")) + "\n")
    if not ensembles.empty:
        parts.append("1 sample vs the N-sample ensemble (mean test Dice; the first sample is "
                     "shared), and the Spearman r between per-case mean voxel entropy and Dice "
                     "(negative: the uncertainty flags poor cases).\n\n"
                     + markdown_table(ensemble_frame(ensembles).set_index("Data set")) + "\n")
    return "\n".join(parts)
