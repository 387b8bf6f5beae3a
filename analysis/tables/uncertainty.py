"""The samples-and-uncertainty table and the cost table (LaTeX; plain-text frames for
summary.md)."""

from __future__ import annotations

import numpy as np
import pandas as pd
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


def uncertainty_frame(summary: pd.DataFrame, metrics=TABLE_METRICS) -> pd.DataFrame:
    """Plain-text cells: data set, setting, N, then `mean (std)` over cases per metric."""
    return pd.DataFrame({
        "Data set": [data_set_name(d) for d in summary["data_set"]],
        "Setting": list(summary["setting"]),
        "N": [str(int(n)) if n >= 2 else "softmax" for n in summary["samples"]],
        **{METRICS[m][0]: [_cell(a, b) for a, b in zip(summary[f"{m}_mean"],
                                                       summary[f"{m}_std"], strict=True)]
           for m in metrics},
    })


def uncertainty_latex(summary: pd.DataFrame) -> str:
    """The samples-and-uncertainty table of `samples_uncertainty.uncertainty_summary`."""
    text = uncertainty_frame(summary)
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
    """Plain-text cells of the cost table (`trial_cost.cost_summary`)."""
    return pd.DataFrame({
        "Data set": [data_set_name(d) for d in cost["data_set"]],
        "Setting": list(cost["setting"]),
        "Train TFLOP": [number(v, 2) for v in cost["train_tflop"]],
        "Train s": [number(v, 0) for v in cost["train_seconds"]],
        "GFLOP/case (1)": [number(v, 2) for v in cost["inference_gflop_1"]],
        "s/case (1)": [number(v, 3) for v in cost["inference_seconds_1"]],
        "N": [str(int(n)) if np.isfinite(n) else EMPTY for n in cost["samples"]],
        "GFLOP/case (N)": [number(v, 2) for v in cost["inference_gflop_ensemble"]],
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
