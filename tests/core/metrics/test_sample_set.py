"""Sample Dice, diversity and GED against hand-computed values on a few voxels."""

import numpy as np
import pytest
from diffseg3d.core.metrics.sample_set import iou_distance, sample_dice, sample_set_metrics

# 1 x 6 voxels, classes 0..2. Class 2 is absent from the label and from every sample.
LABEL = np.array([[1, 1, 1, 0, 0, 0]])
SAMPLES = np.array([
    [[1, 1, 0, 0, 0, 0]],   # class 1: |S&Y| 2, |S| 2 -> Dice 0.8, IoU 2/3
    [[1, 1, 1, 1, 0, 0]],   # class 1: |S&Y| 3, |S| 4 -> Dice 6/7, IoU 3/4
    [[0, 0, 0, 0, 0, 0]],   # never predicts class 1: Dice 0, IoU 0
])


def test_sample_dice_by_hand():
    dice = sample_dice(SAMPLES, LABEL, 3)
    np.testing.assert_allclose(dice[:, 0], [0.8, 6 / 7, 0.0])
    assert np.isnan(dice[:, 1]).all()  # class 2 empty in sample and label


def test_iou_distance_empty_conventions():
    empty = np.zeros((1, 6), int)
    np.testing.assert_allclose(iou_distance(empty, empty, 3), [0.0, 0.0])  # both empty: d = 0
    np.testing.assert_allclose(iou_distance(LABEL, empty, 3), [1.0, 0.0])  # one empty: d = 1


def test_ged_and_diversity_by_hand():
    m = sample_set_metrics(SAMPLES, LABEL, 3)
    d_sy = np.array([1 - 2 / 3, 1 - 3 / 4, 1.0])
    # pairs: (0,1) IoU 2/4, (0,2) one empty -> d 1, (1,2) -> d 1
    diversity = (0.5 + 1.0 + 1.0) / 3
    np.testing.assert_allclose(m["diversity"], [diversity, 0.0])
    np.testing.assert_allclose(m["ged"], [2 * d_sy.mean() - diversity, 0.0])
    np.testing.assert_allclose(m["sample_dice_mean"][0], np.mean([0.8, 6 / 7, 0.0]))
    np.testing.assert_allclose(m["sample_dice_std"][0], np.std([0.8, 6 / 7, 0.0]))
    assert np.isnan(m["sample_dice_mean"][1]) and np.isnan(m["sample_dice_std"][1])


def test_identical_samples_have_zero_diversity_and_ged_twice_the_distance():
    samples = np.stack([LABEL, LABEL])
    m = sample_set_metrics(samples, LABEL, 3)
    np.testing.assert_allclose(m["diversity"], [0.0, 0.0])
    np.testing.assert_allclose(m["ged"], [0.0, 0.0])
    np.testing.assert_allclose(m["sample_dice_std"][0], 0.0)


def test_rejects_one_sample_and_bad_shapes():
    with pytest.raises(ValueError, match="N >= 2"):
        sample_set_metrics(SAMPLES[:1], LABEL, 3)
    with pytest.raises(ValueError, match="must be"):
        sample_set_metrics(SAMPLES[:, :, :4], LABEL, 3)
