"""The samples-and-uncertainty table and the cost table (LaTeX; plain-text frames for
summary.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from diffseg3d.analysis.comparisons import NOT_LOGGED
from diffseg3d.analysis.samples_uncertainty import METRICS
from diffseg3d.analysis.tables.latex import (
    EMPTY,
    FOOTNOTESIZE,
    data_set_name,
    number,
    plain_table_latex,
)

#: Columns of the LaTeX samples-and-uncertainty table (the summary shows them all).
TABLE_METRICS: tuple[str, ...] = ("dice_ensemble", "sample_dice_std", "diversity", "ged", "ece",
                                  "auroc_entropy", "ap_entropy", "auroc_disagreement")
REGION_NOTE = (
    "ECE (15 equal-width confidence bins) and the error detection are computed inside the union "
    "of predicted and reference foreground dilated by 2 voxels (3x3x3 element)")


def _cell(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return EMPTY
    return f"{mean:.3f} ({std:.3f})" if np.isfinite(std) else f"{mean:.3f}"


def uncertainty_frame(summary: pd.DataFrame, metrics=TABLE_METRICS,
                      unscored: tuple[tuple[str, str], ...] = ()) -> pd.DataFrame:
    """Plain-text cells: data set, setting, N, then `mean (std)` over cases per metric; then
    one row per `unscored` (data set, setting), a method that logs no such scores (nnU-Net),
    whose cells read `not logged`."""
    scored = pd.DataFrame({
        "Data set": [data_set_name(d) for d in summary["data_set"]],
        "Setting": list(summary["setting"]),
        "N": [str(int(n)) if n >= 2 else "softmax" for n in summary["samples"]],
        **{METRICS[m][0]: [_cell(a, b) for a, b in zip(summary[f"{m}_mean"],
                                                       summary[f"{m}_std"], strict=True)]
           for m in metrics},
    })
    if not unscored:
        return scored
    rest = pd.DataFrame([[data_set_name(d), s] + [NOT_LOGGED] * (scored.shape[1] - 2)
                         for d, s in unscored], columns=scored.columns)
    return pd.concat([scored, rest], ignore_index=True)


def uncertainty_latex(summary: pd.DataFrame,
                      unscored: tuple[tuple[str, str], ...] = ()) -> str:
    """The samples-and-uncertainty table of `samples_uncertainty.uncertainty_summary` (and
    `not logged` rows for `unscored`, see `uncertainty_frame`)."""
    text = uncertainty_frame(summary, unscored=unscored)
    cap = ("Samples and uncertainty: per model, mean (std) over test cases of each case's mean "
           "over foreground classes. N samples per case (U-Net: its softmax). Dice of the "
           "ensemble label; Dice spread: std of the N samples' Dice; diversity: mean pairwise "
           "1 - IoU between samples; GED: generalised energy distance to the reference, "
           "2 E[d(S, Y)] - E[d(S, S')], d = 1 - IoU (two empty masks: d = 0). "
           + REGION_NOTE + "; AUROC of the voxel entropy (and of the sample disagreement) for "
           "the ensemble's wrong voxels. Lower is better for spread, GED and ECE.")
    return plain_table_latex(text, caption=cap, label="tab:samples-uncertainty",
                             column_format="llc" + "c" * len(TABLE_METRICS),
                             table_styles=FOOTNOTESIZE)


def cost_frame(cost: pd.DataFrame) -> pd.DataFrame:
    """Plain-text cells of the cost table (`trial_cost.cost_summary`); FLOP cells of runs that
    counted none (nnU-Net: wall times only) read `not logged`."""
    counted = cost["forward_gflop"].notna().tolist()

    def flop(values):
        return [number(v, 2) if ok else NOT_LOGGED for v, ok in zip(values, counted, strict=True)]

    return pd.DataFrame({
        "Data set": [data_set_name(d) for d in cost["data_set"]],
        "Setting": list(cost["setting"]),
        "Train TFLOP": flop(cost["train_tflop"]),
        "Train s": [number(v, 0) for v in cost["train_seconds"]],
        "GFLOP/case (1)": flop(cost["inference_gflop_1"]),
        "s/case (1)": [number(v, 3) for v in cost["inference_seconds_1"]],
        "N": [str(int(n)) if np.isfinite(n) else EMPTY for n in cost["samples"]],
        "GFLOP/case (N)": flop(cost["inference_gflop_ensemble"]),
        "s/case (N)": [number(v, 3) for v in cost["inference_seconds_ensemble"]],
        "Dice (1)": [number(v) for v in cost["dice_1"]],
        "Dice (N)": [number(v) for v in cost["dice_ensemble"]],
        "Device": list(cost["device"]),
    })


def cost_latex(cost: pd.DataFrame) -> str:
    """The compute-cost table beside the main tables."""
    text = cost_frame(cost)
    cap = ("Compute per model: training TFLOP (FLOPs of one compiled train step, the larger of "
           "XLA's cost analysis and the count from the convolution and dot shapes, times the "
           "steps trained) and training wall time (with compilation and validation); inference "
           "GFLOP per case (forward passes x FLOPs of one forward pass: 1 for the U-Net, K "
           "sampling steps per diffusion sample, N K for an N-sample ensemble) and measured "
           "seconds per case (one compiled batch re-run, divided by its cases); mean test Dice "
           "of one sample and of the N-sample ensemble. Means over seeds.")
    return plain_table_latex(text, caption=cap, label="tab:cost",
                             column_format="ll" + "c" * (text.shape[1] - 2),
                             table_styles=FOOTNOTESIZE)
