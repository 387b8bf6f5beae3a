"""Per table: the paired Dice difference of every test case, one panel per comparison.

Each panel shows the differences b - a of the paired cases (points, seed means), their mean
(solid line), the BCa bootstrap interval of that mean (dark band), the band -mde80..+mde80 of
differences this study detects with less than 80% power (light band) and zero (dotted). A
difference whose interval lies inside the light band is one the study could have seen and did
not; points spread far beyond it show how much single cases disagree.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from diffseg3d.analysis.comparisons import axis_header
from diffseg3d.analysis.table_data import Comparison, TableData
from diffseg3d.analysis.tables.latex import data_set_name

#: Artist labels (legend entries; tests find the artists by them).
POINTS_LABEL = "case difference (b - a)"
MEAN_LABEL = "mean difference"
INTERVAL_LABEL = "{level} bootstrap interval"
MDE_LABEL = "+-mde80 (80% power)"
PANEL_INCHES = (3.6, 3.2)
MIN_WIDTH_INCHES = 6.0


def panel_title(data: TableData, comp: Comparison) -> str:
    """`Prostate MR: Recycling Y vs N` (data set, axis, compared vs reference)."""
    axis = axis_header(data.spec)
    return f"{data_set_name(comp.data_set)}: {axis} {comp.compared} vs {comp.reference}"


def draw_panel(ax: plt.Axes, comp: Comparison) -> None:
    """One comparison's differences, mean, interval and mde80 band on `ax`."""
    diffs = np.asarray(comp.differences, dtype=float)
    x = np.arange(len(diffs))
    if np.isfinite(comp.mde80):
        ax.axhspan(-comp.mde80, comp.mde80, color="0.85", linewidth=0, label=MDE_LABEL)
    if np.isfinite(comp.interval.low) and np.isfinite(comp.interval.high):
        level = f"{100 * comp.interval.confidence:g}%"
        ax.axhspan(comp.interval.low, comp.interval.high, color="tab:blue", alpha=0.3,
                   linewidth=0, label=INTERVAL_LABEL.format(level=level))
    ax.axhline(0.0, color="0.3", linestyle=":", linewidth=0.8)
    if len(diffs):
        ax.axhline(float(diffs.mean()), color="tab:blue", linewidth=1.2, label=MEAN_LABEL)
    ax.scatter(x, diffs, s=18, color="black", zorder=3, label=POINTS_LABEL)
    ax.set_xticks(x, list(comp.cases), rotation=90, fontsize=6)
    ax.set_xlabel(f"test case ({len(diffs)} paired, mean over {max(comp.n_seeds, 1)} seed(s))")
    ax.set_ylabel("Dice difference per case (b - a)")


def paired_differences_figure(data: TableData, panel_inches=PANEL_INCHES) -> plt.Figure | None:
    """The figure of table `data`: one panel per comparison, in the table's order, sharing the y
    axis (None when the table has no comparison). Returns the open Figure (save with
    `saving.save`)."""
    comps = data.comparisons
    if not comps:
        return None
    cols = min(len(comps), 3)
    rows = -(-len(comps) // cols)
    width = max(panel_inches[0] * cols, MIN_WIDTH_INCHES)  # room for the legend and title
    fig, axes = plt.subplots(rows, cols, figsize=(width, panel_inches[1] * rows + 0.8),
                             layout="constrained", squeeze=False, sharey=True)
    for ax, comp in zip(axes.flat, comps, strict=False):
        draw_panel(ax, comp)
        ax.set_title(panel_title(data, comp), fontsize=9)
    for ax in list(axes.flat)[len(comps):]:
        ax.set_visible(False)
    legend = {}  # label -> handle over all panels (a panel without an interval lacks its band)
    for ax in axes.flat[:len(comps)]:
        legend.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(list(legend.values()), list(legend), loc="outside lower center", fontsize=7,
               frameon=False, ncol=2 if cols == 1 else len(legend))
    fig.suptitle(f"Table {data.spec.label}: paired Dice differences per test case", fontsize=10)
    return fig
