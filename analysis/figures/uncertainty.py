"""Figures of the samples-and-uncertainty analysis: reliability diagrams, Dice against the
inference cost of 1, 2, 4, ... samples, and uncertainty against error on one slice."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from diffseg3d.analysis.figures.saving import save
from diffseg3d.core.metrics.calibration import expected_calibration_error


def reliability_diagrams(reliability: pd.DataFrame, runs: pd.DataFrame, stem: Path,
                         panel_inches: float = 3.0) -> list[Path]:
    """One panel per (data set, setting): accuracy against mean confidence per bin (bins
    pooled over the setting's runs and test cases inside the evaluation region), the diagonal
    of perfect calibration, and the pooled ECE in the title. Empty list when nothing logged."""
    rows = reliability.merge(runs[["run_id", "data_set", "setting"]].dropna(), on="run_id")
    if rows.empty:
        return []
    rows = rows.assign(conf_sum=rows["confidence"].fillna(0) * rows["count"],
                       acc_sum=rows["accuracy"].fillna(0) * rows["count"])
    groups = list(rows.groupby(["data_set", "setting"], sort=True))
    size = (panel_inches * len(groups), panel_inches + 0.6)
    fig, axes = plt.subplots(1, len(groups), figsize=size, squeeze=False)
    for ax, ((data_set, setting), sub) in zip(axes[0], groups, strict=True):
        bins = sub.groupby("bin").agg(low=("low", "first"), high=("high", "first"),
                                      count=("count", "sum"), conf=("conf_sum", "sum"),
                                      acc=("acc_sum", "sum"))
        filled = bins[bins["count"] > 0]
        width = filled["high"] - filled["low"]
        ax.bar(filled["low"], filled["acc"] / filled["count"], width=width, align="edge",
               edgecolor="black", color="tab:blue", alpha=0.7, label="accuracy")
        ax.plot(filled["conf"] / filled["count"], filled["acc"] / filled["count"], "o",
                color="tab:red", ms=3, label="mean confidence")
        ax.plot([0, 1], [0, 1], "--", color="gray", lw=1)
        ece = expected_calibration_error({"count": bins["count"].to_numpy(),
                                          "confidence": bins["conf"].to_numpy(),
                                          "correct": bins["acc"].to_numpy()})
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", title=f"{setting}\n{data_set}, "
               f"ECE {ece:.3f}")
        ax.title.set_fontsize(8)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save(fig, stem)


def dice_vs_inference_cost(points: pd.DataFrame, stem: Path, figsize=(6.5, 4.0)) -> list[Path]:
    """Mean test Dice against GFLOP per case, one line per setting through its ensembles of
    1, 2, 4, ... samples (labelled with n); log-scaled cost axis. Empty list without points."""
    if points.empty:
        return []
    fig, ax = plt.subplots(figsize=figsize)
    for (data_set, setting), sub in points.groupby(["data_set", "setting"], sort=True):
        sub = sub.sort_values("samples")
        ax.plot(sub["inference_gflop"], sub["dice"], "o-", label=f"{setting} ({data_set})")
        for x, y, n in zip(sub["inference_gflop"], sub["dice"], sub["samples"], strict=True):
            ax.annotate(str(int(n)), (x, y), textcoords="offset points", xytext=(3, 3),
                        fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="inference GFLOP per case (n samples x K passes x forward)",
           ylabel="mean test Dice", title="Dice against inference cost (n = samples)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, stem)


def uncertainty_vs_error(slices: list[tuple[str, dict[str, np.ndarray]]], stem: Path,
                         panel_inches: float = 2.4) -> list[Path]:
    """One row per model: image, reference, prediction, error (prediction != reference) and the
    voxel entropy of one slice of the first test case. Empty list without slices."""
    if not slices:
        return []
    fig, axes = plt.subplots(len(slices), 5, figsize=(5 * panel_inches, len(slices) * panel_inches),
                             squeeze=False)
    for row, (name, piece) in zip(axes, slices, strict=True):
        label, pred, image = piece["label"], piece["pred"], np.rot90(piece["image"])
        vmax = max(int(label.max()), int(pred.max()), 1)
        panels = [("image", None, None, None), ("reference", label, "tab10", vmax),
                  ("prediction", pred, "tab10", vmax),
                  ("error (pred != ref)", (label != pred).astype(float), "Reds", 1.0),
                  ("entropy (nats)", piece["entropy"], "magma", None)]
        for ax, (title, data, cmap, top) in zip(row, panels, strict=True):
            ax.imshow(image, cmap="gray", interpolation="nearest")
            if data is not None:
                # Label maps and the error over the image: background / no error transparent.
                shown = np.rot90(data)
                if title != panels[-1][0]:
                    shown = np.ma.masked_equal(shown, 0)
                im = ax.imshow(shown, cmap=cmap, vmin=0, vmax=top, interpolation="nearest",
                               alpha=0.85)
                if title == panels[-1][0]:
                    fig.colorbar(im, ax=ax, fraction=0.046)
            ax.set_title(name if title == "image" else title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return save(fig, stem)
