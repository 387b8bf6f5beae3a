"""What each model cost, per data set and setting, from the runs' `cost_*` metrics
(`experiments.tracking.record.COST_METRICS`, in `Collection.run_metrics`):

- `cost_summary`: training TFLOP (one compiled train step's FLOPs x steps), train and
  evaluation wall time, inference GFLOP and measured seconds per case for one sample and for
  the ensemble, with the test Dice of one sample and of the ensemble; means over runs (seeds).
- `dice_by_inference_cost`: the Dice of the ensembles of the first n = 1, 2, 4, ..., N samples
  (`test_dice_ensemble_n<n>`) against n x the GFLOP of one sample; a U-Net is one point (one
  forward pass, its `test_dice`).

Runs logged before the cost metrics existed have none: they are listed by `not_logged`. Runs
with wall times but no FLOP counts (nnU-Net) get a row whose FLOP columns are NaN, shown as
"not logged" by `tables.uncertainty.cost_frame`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from diffseg3d.analysis.table_data import data_set_order

COST_COLUMNS: tuple[str, ...] = (
    "data_set", "setting", "n_runs", "device", "train_tflop", "train_step_gflop", "steps",
    "train_seconds", "eval_seconds", "forward_gflop", "passes", "inference_gflop_1",
    "inference_seconds_1", "samples", "inference_gflop_ensemble", "inference_seconds_ensemble",
    "dice_1", "dice_ensemble")
DICE_COST_COLUMNS: tuple[str, ...] = ("data_set", "setting", "samples", "inference_gflop",
                                      "dice", "n_runs")
ENSEMBLE_PREFIX = "test_dice_ensemble_n"


def _wide(run_metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    keep = runs[runs["problem"].isna()].dropna(subset=["setting"])
    cols = [c for c in ("run_id", "data_set", "setting", "device_kind") if c in keep.columns]
    rows = run_metrics.merge(keep[cols], on="run_id")
    if rows.empty:
        return pd.DataFrame(columns=["run_id", "data_set", "setting"])
    wide = rows.pivot_table(index="run_id", columns="metric", values="value", aggfunc="first")
    return keep[cols].set_index("run_id").join(wide, how="inner").reset_index()


def _col(wide: pd.DataFrame, name: str) -> pd.Series:
    return wide[name] if name in wide.columns else pd.Series(np.nan, index=wide.index)


def cost_summary(run_metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`COST_COLUMNS`, one row per (data set, setting) whose runs logged `cost_forward_flops`
    or, without FLOP counts (nnU-Net's trials log wall times only), `cost_train_seconds`; the
    FLOP columns of those are NaN."""
    wide = _wide(run_metrics, runs)
    if wide.empty or not {"cost_forward_flops", "cost_train_seconds"} & set(wide.columns):
        return pd.DataFrame(columns=list(COST_COLUMNS))
    wide = wide[_col(wide, "cost_forward_flops").notna()
                | _col(wide, "cost_train_seconds").notna()]
    frame = pd.DataFrame({
        "data_set": wide["data_set"], "setting": wide["setting"], "run_id": wide["run_id"],
        "device": _col(wide, "device_kind").fillna("not logged"),
        "train_tflop": _col(wide, "cost_train_flops") / 1e12,
        "train_step_gflop": _col(wide, "cost_train_step_flops") / 1e9,
        "steps": _col(wide, "cost_train_flops") / _col(wide, "cost_train_step_flops"),
        "train_seconds": _col(wide, "cost_train_seconds"),
        "eval_seconds": _col(wide, "cost_eval_seconds"),
        "forward_gflop": _col(wide, "cost_forward_flops") / 1e9,
        "passes": _col(wide, "cost_forward_passes"),
        "inference_gflop_1": _col(wide, "cost_inference_flops_1") / 1e9,
        "inference_seconds_1": _col(wide, "cost_inference_seconds_1"),
        "samples": _col(wide, "cost_inference_samples"),
        "inference_gflop_ensemble": _col(wide, "cost_inference_flops_ensemble") / 1e9,
        "inference_seconds_ensemble": _col(wide, "cost_inference_seconds_ensemble"),
        "dice_1": _col(wide, "test_dice"),
        "dice_ensemble": _col(wide, "test_dice_ensemble").fillna(_col(wide, "test_dice")),
    })
    grouped = frame.groupby(["data_set", "setting"], sort=False)
    numeric = [c for c in COST_COLUMNS if c not in ("data_set", "setting", "n_runs", "device")]
    table = grouped[numeric].mean()
    table["n_runs"] = grouped["run_id"].nunique()
    table["device"] = grouped["device"].agg(lambda d: ", ".join(sorted(set(d))))
    return _sorted(table.reset_index()).loc[:, list(COST_COLUMNS)]


def dice_by_inference_cost(run_metrics: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """`DICE_COST_COLUMNS`: per data set, setting and ensemble size n, the GFLOP per case and
    the mean Dice over runs."""
    wide = _wide(run_metrics, runs)
    if wide.empty or "cost_inference_flops_1" not in wide.columns:
        return pd.DataFrame(columns=list(DICE_COST_COLUMNS))
    points = []
    sizes = sorted(int(c.removeprefix(ENSEMBLE_PREFIX)) for c in wide.columns
                   if str(c).startswith(ENSEMBLE_PREFIX))
    for row in wide.itertuples(index=False):
        values = row._asdict()
        one = values.get("cost_inference_flops_1", np.nan)
        if not np.isfinite(one):
            continue
        found = [(n, values.get(f"{ENSEMBLE_PREFIX}{n}", np.nan)) for n in sizes]
        found = [(n, d) for n, d in found if np.isfinite(d)] or [(1, values.get("test_dice"))]
        points += [(row.data_set, row.setting, n, n * one / 1e9, d, row.run_id) for n, d in found]
    if not points:
        return pd.DataFrame(columns=list(DICE_COST_COLUMNS))
    frame = pd.DataFrame(points, columns=["data_set", "setting", "samples", "inference_gflop",
                                          "dice", "run_id"])
    grouped = frame.groupby(["data_set", "setting", "samples"], sort=False)
    table = grouped[["inference_gflop", "dice"]].mean()
    table["n_runs"] = grouped["run_id"].nunique()
    return _sorted(table.reset_index(), ["samples"]).loc[:, list(DICE_COST_COLUMNS)]


def not_logged(runs: pd.DataFrame, cost: pd.DataFrame) -> list[str]:
    """`<data set>: <setting>` of collected runs whose setting has no cost row."""
    ok = runs[runs["problem"].isna() & runs["setting"].notna()]
    have = set(zip(cost["data_set"], cost["setting"], strict=True))
    return sorted({f"{d}: {s}" for d, s in zip(ok["data_set"], ok["setting"], strict=True)
                   if (d, s) not in have})


def _sorted(table: pd.DataFrame, extra: list[str] | None = None) -> pd.DataFrame:
    order = table["data_set"].map(data_set_order)
    return (table.assign(_o=order).sort_values(["_o", "setting", *(extra or [])])
            .drop(columns="_o").reset_index(drop=True))
