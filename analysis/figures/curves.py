"""Curves: training loss / validation Dice per step, test Dice per sampling step."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from diffseg3d.analysis.figures.saving import save
from diffseg3d.analysis.tables.latex import data_set_name


def training_curves(history: pd.DataFrame, runs: pd.DataFrame, stem: Path,
                    keys=("loss", "val_dice"), figsize=(11.0, 4.5)) -> list[Path]:
    """One panel per metric key; one line per (data set, setting), mean over seeds per step.

    history: `run_id, key, step, value` (collect.collect_metric_history).
    runs: `run_id, data_set, setting`.
    """
    merged = history.merge(runs[["run_id", "data_set", "setting"]], on="run_id")
    merged["curve"] = [f"{data_set_name(d)}: {s}" for d, s in
                       zip(merged["data_set"], merged["setting"], strict=True)]
    fig, axes = plt.subplots(1, len(keys), figsize=figsize, layout="constrained", squeeze=False)
    titles = {"loss": "training loss", "val_dice": "validation Dice"}
    for ax, key in zip(axes[0], keys, strict=True):
        sub = merged[merged["key"] == key]
        if sub.empty:
            ax.text(0.5, 0.5, f"no '{key}' history logged", ha="center", va="center",
                    transform=ax.transAxes)
        else:
            mean = sub.groupby(["curve", "step"], as_index=False)["value"].mean()
            sns.lineplot(data=mean, x="step", y="value", hue="curve", ax=ax, linewidth=1.2,
                         marker="o" if mean["step"].nunique() < 20 else None)
            ax.legend(fontsize=7, title=None)
        # Log scale only when the loss spans orders of magnitude; else it only hides the ticks.
        values = sub["value"][sub["value"] > 0]
        log = key == "loss" and len(values) > 0 and values.max() / values.min() > 20
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("training step")
        ax.set_ylabel(titles.get(key, key) + (" (log)" if log else ""))
        ax.set_title(titles.get(key, key) + " (mean over seeds)")
    return save(fig, stem)


def dice_by_sampling_step(steps: pd.DataFrame, stem: Path, figsize=(11.0, 4.5)) -> list[Path]:
    """One panel per data set: mean test Dice vs sampling step (1 = from pure noise, the last =
    the prediction), one line per setting, a band of +- one std over seeds where there are
    several.

    steps: output of `sampling_chain.step_dice`.
    """
    data_sets = list(dict.fromkeys(steps["data_set"]))
    fig, axes = plt.subplots(1, len(data_sets), figsize=figsize, layout="constrained",
                             squeeze=False, sharey=True)
    palette = dict(zip(sorted(steps["setting"].unique()),
                       sns.color_palette(n_colors=steps["setting"].nunique()), strict=True))
    for ax, data_set in zip(axes[0], data_sets, strict=True):
        rows = steps[steps["data_set"] == data_set]
        for setting, line in rows.groupby("setting", sort=True):
            line = line.sort_values("step")
            ax.plot(line["step"], line["mean"], marker="o", linewidth=1.2,
                    color=palette[setting], label=setting)
            spread = line["std"].fillna(0.0)
            ax.fill_between(line["step"], line["mean"] - spread, line["mean"] + spread,
                            color=palette[setting], alpha=0.15, linewidth=0)
        ax.set_xticks(sorted(rows["step"].unique()))
        ax.set_xlabel("sampling step (last = prediction)")
        ax.set_title(data_set_name(data_set))
    axes[0][0].set_ylabel("mean test Dice of the step's $\\hat{x}_0$")
    legend = {}  # label -> handle, over all panels (settings may differ between data sets)
    for ax in axes[0]:
        legend.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, loc="outside lower center", fontsize=7, frameon=False,
               ncol=min(3, max(1, len(labels))))
    fig.suptitle("Quality along the sampling chain (mean over seeds)")
    return save(fig, stem)
