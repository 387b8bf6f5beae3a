"""Figures exist as PNG and PDF, have the expected pixel size and are not blank."""

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from diffseg3d.analysis.comparisons import add_setting_column
from diffseg3d.analysis.figures.curves import training_curves
from diffseg3d.analysis.figures.montage import best_slice, prediction_montage
from diffseg3d.analysis.figures.per_class import per_class_dice_boxplot, roi_dice_scatter
from diffseg3d.analysis.figures.saving import DPI
from diffseg3d.analysis.stats.spearman import roi_dice_spearman

from ..synthetic_runs import synthetic_frame


def _check(paths, size_inches):
    png, pdf = paths
    assert pdf.suffix == ".pdf" and pdf.read_bytes()[:4] == b"%PDF"
    pixels = mpimg.imread(png)
    w, h = size_inches
    assert pixels.shape[:2] == (round(h * DPI), round(w * DPI))
    assert pixels[..., :3].var() > 1e-3  # not a blank canvas


@pytest.fixture(scope="module")
def frame():
    return add_setting_column(synthetic_frame(settings=("default", "no-recycling", "unet"),
                                              n_cases=6, seeds=(0, 1)))


def test_per_class_boxplot(frame, tmp_path):
    _check(per_class_dice_boxplot(frame, "prostate-mr", tmp_path / "box",
                                          figsize=(6, 3)), (6, 3))


def test_roi_scatter(frame, tmp_path):  # its legend's Spearman r and p: test_figure_content.py
    spearman = roi_dice_spearman(frame)
    _check(roi_dice_scatter(frame, spearman, "prostate-mr", tmp_path / "roi",
                                    figsize=(5, 4)), (5, 4))


def test_training_curves(frame, tmp_path):
    runs = frame.drop_duplicates("run_id")[["run_id", "data_set", "setting"]]
    history = pd.DataFrame([
        {"run_id": r, "key": key, "step": s, "value": (1 / (s + 1) if key == "loss" else s / 10)}
        for r in runs["run_id"] for key in ("loss", "val_dice") for s in range(0, 10, 2)])
    _check(training_curves(history, runs, tmp_path / "curves", figsize=(8, 3)), (8, 3))


def test_prediction_montage_size(tmp_path):
    label = np.zeros((16, 12), int)
    label[2:8, 2:6], label[9:14, 6:11] = 1, 2
    image = np.random.default_rng(0).random((16, 12))
    panels = [("ground truth", label), ("model", np.roll(label, 1, axis=0))]
    paths = prediction_montage(image, panels, ["organ a", "organ b"],
                                       tmp_path / "montage", panel_inches=2.0)
    _check(paths, (3 * 2.0, 2.0 + 1.0))


def test_best_slice_prefers_more_classes_then_more_voxels():
    label = np.zeros((4, 4, 3), int)
    label[:, :, 0] = 1                       # one class, 16 voxels
    label[0, 0, 1], label[1, 1, 1] = 1, 2    # two classes, 2 voxels
    label[0, :2, 2], label[1, 1, 2] = 1, 2   # two classes, 3 voxels
    assert best_slice(label) == 2
