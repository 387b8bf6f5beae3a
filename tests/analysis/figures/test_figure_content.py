"""What the analysis figures show, read from the matplotlib figure each function draws (recorded
as it is handed to `save`, which then writes it as usual): axis labels, titles, legend texts
(the Spearman r and permutation p), and the number and values of the points, boxes and lines,
against values computed here from the same rows."""

import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.comparisons import add_setting_column
from diffseg3d.analysis.figures import curves, per_class
from diffseg3d.analysis.stats.spearman import roi_dice_spearman
from matplotlib.patches import PathPatch
from scipy import stats

from ..synthetic_runs import synthetic_frame

SETTINGS = ("default", "no-recycling", "unet")


@pytest.fixture(scope="module")
def frame():
    return add_setting_column(synthetic_frame(settings=SETTINGS, n_cases=5, seeds=(0, 1)))


@pytest.fixture
def drawn(monkeypatch):
    """The figures that `per_class` and `curves` pass to `save`, in order."""
    figures = []
    for module in (per_class, curves):
        def record(fig, stem, _save=module.save):
            figures.append(fig)
            return _save(fig, stem)

        monkeypatch.setattr(module, "save", record)
    return figures


def test_roi_scatter_points_axes_and_spearman_legend(frame, drawn, tmp_path):
    spearman = roi_dice_spearman(frame)
    per_class.roi_dice_scatter(frame, spearman, "prostate-mr", tmp_path / "roi")
    (fig,) = drawn
    (ax,) = fig.axes
    assert ax.get_xlabel() == "mean ground-truth volume per class (mm³, log scale)"
    assert ax.get_ylabel() == "mean Dice per class"
    assert ax.get_xscale() == "log"
    assert ax.get_title().startswith("Prostate")
    rows = frame[frame["data_set"] == "prostate-mr"]
    means = rows.groupby(["setting", "class"])[["roi_mm3", "dice"]].mean()
    settings = sorted(rows["setting"].unique())
    assert len(ax.collections) == len(settings)  # one scatter per setting
    (legend,) = fig.legends
    texts = [t.get_text() for t in legend.get_texts()]
    for points, text, setting in zip(ax.collections, texts, settings, strict=True):
        expected = means.loc[setting].sort_values("roi_mm3").to_numpy()
        got = points.get_offsets()
        np.testing.assert_allclose(got[np.argsort(got[:, 0])], expected)  # one point per class
        # The legend's r is Spearman's rho of these very points (scipy), its p the permutation p.
        rho = stats.spearmanr(expected[:, 0], expected[:, 1]).statistic
        row = spearman[(spearman["data_set"] == "prostate-mr")
                       & (spearman["setting"] == setting)].iloc[0]
        assert row["r"] == pytest.approx(rho)
        assert text == f"{setting}: Spearman r = {rho:.2f} (perm. p = {row['p_perm']:.3g})"
    assert len(ax.texts) == rows["class"].nunique()  # every class named at its point


def test_per_class_boxplot_boxes_order_and_legend(frame, drawn, tmp_path):
    per_class.per_class_dice_boxplot(frame, "prostate-mr", tmp_path / "box")
    (fig,) = drawn
    (ax,) = fig.axes
    rows = frame[frame["data_set"] == "prostate-mr"]
    by_volume = list(rows.groupby("class")["roi_mm3"].mean().sort_values(ascending=False).index)
    assert [t.get_text() for t in ax.get_xticklabels()] == by_volume
    assert ax.get_xlabel() == "class (largest to smallest mean ground-truth volume)"
    assert ax.get_ylabel() == "Dice per test case"
    boxes = [p for p in ax.patches if isinstance(p, PathPatch)]
    settings = sorted(rows["setting"].unique())
    assert len(settings) == len(SETTINGS)
    assert len(boxes) == len(by_volume) * len(settings)  # one box per class and setting
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "setting"
    assert sorted(t.get_text() for t in legend.get_texts()) == settings


def test_training_curves_one_line_per_setting_with_the_mean_over_seeds(frame, drawn, tmp_path):
    runs = frame.drop_duplicates("run_id")[["run_id", "data_set", "setting"]]
    steps = range(0, 100, 20)
    seed_of = dict(zip(frame["run_id"], frame["seed"], strict=False))
    history = pd.DataFrame([
        {"run_id": r, "key": key, "step": s,
         "value": (100.0 / (s + 1) if key == "loss" else s / 100) + seed_of[r] / 1000}
        for r in runs["run_id"] for key in ("loss", "val_dice") for s in steps])
    curves.training_curves(history, runs, tmp_path / "curves")
    (fig,) = drawn
    loss_ax, dice_ax = fig.axes
    assert loss_ax.get_xlabel() == dice_ax.get_xlabel() == "training step"
    assert loss_ax.get_ylabel() == "training loss (log)" and loss_ax.get_yscale() == "log"
    assert dice_ax.get_ylabel() == "validation Dice" and dice_ax.get_yscale() == "linear"
    for ax, key in ((loss_ax, "loss"), (dice_ax, "val_dice")):
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        assert sorted(labels) == sorted(f"Prostate MR: {s}" for s in runs["setting"].unique())
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) == len(steps)]
        assert len(lines) == len(SETTINGS)
        for line in lines:
            np.testing.assert_array_equal(line.get_xdata(), list(steps))
            # The mean over seeds 0 and 1 adds 0.5 / 1000 to every point.
            base = [(100.0 / (s + 1) if key == "loss" else s / 100) for s in steps]
            np.testing.assert_allclose(line.get_ydata(), np.array(base) + 0.0005)


def test_dice_by_sampling_step_lines_ticks_and_legend(drawn, tmp_path):
    steps = pd.DataFrame([
        {"data_set": d, "setting": s, "step": k, "mean": 0.1 * k + (0.05 if s == "b" else 0),
         "std": 0.01}
        for d in ("prostate-mr", "amos-ct") for s in ("a", "b") for k in (1, 2, 3, 4, 5)])
    curves.dice_by_sampling_step(steps, tmp_path / "chain")
    (fig,) = drawn
    panels = fig.axes
    assert [ax.get_title() for ax in panels] == ["Prostate MR", "Abdominal CT"]
    assert panels[0].get_ylabel() == "mean test Dice of the step's $\\hat{x}_0$"
    for ax in panels:
        assert ax.get_xlabel() == "sampling step (last = prediction)"
        assert list(ax.get_xticks()) == [1, 2, 3, 4, 5]
        a, b = ax.get_lines()
        np.testing.assert_allclose(a.get_ydata(), [0.1, 0.2, 0.3, 0.4, 0.5])
        np.testing.assert_allclose(b.get_ydata(), [0.15, 0.25, 0.35, 0.45, 0.55])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]
    assert fig.get_suptitle() == "Quality along the sampling chain (mean over seeds)"
