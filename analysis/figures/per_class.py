"""Per-class figures of one data set: Dice per class per setting, ROI volume vs Dice."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from diffseg3d.analysis.figures.saving import save
from diffseg3d.analysis.tables.latex import data_set_name


def _class_order(rows: pd.DataFrame) -> list[str]:
    """Classes from largest to smallest mean ROI volume (size is what Dice depends on)."""
    return list(rows.groupby("class")["roi_mm3"].mean().sort_values(ascending=False).index)


def per_class_dice_boxplot(frame: pd.DataFrame, data_set: str, stem: Path,
                           figsize=(12.0, 5.0)) -> list[Path]:
    """Box plot of per-case Dice (mean over seeds) per class, one colour per setting.

    frame: tidy rows with a `setting` column.
    """
    rows = frame[frame["data_set"] == data_set]
    per_case = rows.groupby(["setting", "class", "case"], as_index=False)["dice"].mean()
    order = _class_order(rows)
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    sns.boxplot(data=per_case, x="class", y="dice", hue="setting", order=order, ax=ax,
                fliersize=2, linewidth=0.8)
    ax.set_xlabel("class (largest to smallest mean ground-truth volume)")
    ax.set_ylabel("Dice per test case")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{data_set_name(data_set)}: per-class Dice on the test cases")
    ax.tick_params(axis="x", rotation=30 if len(order) > 6 else 0)
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.01, 1.0), title="setting", fontsize=8,
                    title_fontsize=8, frameon=False)
    return save(fig, stem)


def roi_dice_scatter(frame: pd.DataFrame, spearman: pd.DataFrame, data_set: str, stem: Path,
                     figsize=(8.0, 5.5)) -> list[Path]:
    """Mean ground-truth volume (mm^3, log axis) vs mean Dice, one point per class and setting.

    spearman: output of `spearman.roi_dice_spearman` (r and permutation p go in the legend).
    """
    rows = frame[frame["data_set"] == data_set]
    per_class = rows.groupby(["setting", "class"], as_index=False)[["roi_mm3", "dice"]].mean()
    stats = spearman[spearman["data_set"] == data_set].set_index("setting")
    fig, ax = plt.subplots(figsize=figsize, layout="constrained")
    palette = sns.color_palette(n_colors=per_class["setting"].nunique())
    for colour, (setting, pts) in zip(palette, per_class.groupby("setting"), strict=True):
        r = stats.loc[setting, "r"] if setting in stats.index else np.nan
        p = stats.loc[setting, "p_perm"] if setting in stats.index else np.nan
        ax.scatter(pts["roi_mm3"], pts["dice"], color=colour, s=28, alpha=0.85,
                   label=f"{setting}: Spearman r = {r:.2f} (perm. p = {p:.3g})")
    first = per_class[per_class["setting"] == per_class["setting"].iloc[0]]
    # Alternate labels below / above the points (sorted by size) so neighbours do not collide.
    for i, row in enumerate(first.sort_values("roi_mm3").itertuples()):
        ax.annotate(str(row[2]), (row.roi_mm3, row.dice), textcoords="offset points",
                    xytext=(4, -10 if i % 2 == 0 else 6), fontsize=7, color="0.3")
    ax.set_xscale("log")
    ax.set_xlabel("mean ground-truth volume per class (mm³, log scale)")
    ax.set_ylabel("mean Dice per class")
    ax.set_title(f"{data_set_name(data_set)}: ROI size vs Dice (one point per class)")
    # Below the axes: inside, it hides the small classes, which sit at the bottom left.
    fig.legend(loc="outside lower center", fontsize=7, frameon=False, ncol=1)
    return save(fig, stem)
