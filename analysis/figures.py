"""Figures (seaborn / matplotlib), each saved as PNG (fixed pixel size) and PDF.

- `per_class_dice_boxplot`: Dice per class per setting (one data set).
- `roi_dice_scatter`: mean ROI volume vs mean Dice per class, Spearman r in the legend.
- `training_curves`: `loss` and `val_dice` from MLflow metric history, mean over seeds.
- `dice_by_sampling_step`: mean test Dice of each sampling step's x0_hat, one line per setting.
- `prediction_montage`: the paper's Fig. 2: image, ground truth and predictions of one slice
  (rendered by `core.viz.montage`, like the trial's per-case PNGs).

Figure sizes are fixed in inches and saved at `DPI` without tight cropping, so a PNG is exactly
`figsize * DPI` pixels.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window (CI, Ray workers)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from diffseg3d.analysis.tables import data_set_name  # noqa: E402
from diffseg3d.core.viz.montage import DPI, montage_figure  # noqa: E402


def save(fig: plt.Figure, stem: Path) -> list[Path]:
    """Write `stem.png` and `stem.pdf`; close the figure; return both paths."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return paths


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


def best_slice(label: np.ndarray) -> int:
    """Index along the last axis with the most foreground classes, then most foreground voxels."""
    spatial = label.reshape(-1, label.shape[-1])
    n_classes = np.array([len(np.unique(spatial[:, z][spatial[:, z] > 0]))
                          for z in range(label.shape[-1])])
    n_voxels = (spatial > 0).sum(0)
    return int(np.lexsort((n_voxels, n_classes))[-1])


def prediction_montage(image: np.ndarray, panels: list[tuple[str, np.ndarray]],
                       class_names: list[str], stem: Path, title: str = "",
                       z: int | None = None, panel_inches: float = 2.5) -> list[Path]:
    """Fig. 2: the image, then each (title, label map) overlaid in class colours, one slice.

    image: (X, Y) float; panels: [(title, (X, Y) int)], ground truth first by convention;
    class_names: foreground names (label i + 1); z: the slice's index, shown as the row label.
    Drawn by `core.viz.montage` (radiological view, the trial PNGs' colours); the figure is
    `(len(panels) + 1) * panel_inches` wide and `panel_inches + 1` high.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"prediction_montage needs an (X, Y) slice, got shape {image.shape}")
    volumes = [(name, np.asarray(label)[..., None]) for name, label in panels]
    fig = montage_figure(image[..., None], volumes, class_names, [0], title=title,
                         row_labels=["" if z is None else f"z = {z}"],
                         panel_inches=panel_inches)
    return save(fig, stem)
