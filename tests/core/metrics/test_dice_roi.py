"""Dice and ROI size on hand-built label maps."""

import numpy as np
import pytest
from diffseg3d.core.metrics import dice_per_class, roi_size_per_class


def _maps():
    label = np.zeros((4, 4, 2), dtype=np.int32)
    pred = np.zeros_like(label)
    label[0:2, 0:2, :] = 1  # 8 voxels
    pred[0:2, 0:1, :] = 1  # 4 voxels, all inside label's class 1
    label[3, 3, 0] = 2  # class 2 only in the label
    pred[2, 2, 1] = 3  # class 3 only in the prediction; class 4 nowhere
    return pred, label


def test_dice_by_hand_with_empty_rules():
    pred, label = _maps()
    dice = dice_per_class(pred, label, num_classes=5)
    assert dice.shape == (4,)
    assert dice[0] == pytest.approx(2 * 4 / (4 + 8))
    assert dice[1] == 0.0 and dice[2] == 0.0  # one of the two masks empty
    assert np.isnan(dice[3])  # both empty


def test_dice_is_one_for_identical_maps():
    _, label = _maps()
    np.testing.assert_array_equal(dice_per_class(label, label, 3), [1.0, 1.0])


def test_roi_size_voxels_and_mm3():
    _, label = _maps()
    voxels, mm3 = roi_size_per_class(label, 4, spacing=(0.75, 0.75, 2.5))
    np.testing.assert_array_equal(voxels, [8, 1, 0])
    np.testing.assert_allclose(mm3, [8 * 1.40625, 1.40625, 0.0])


@pytest.mark.parametrize(
    ("pred", "label", "num_classes", "match"),
    [
        (np.zeros((2, 2)), np.zeros((2, 3)), 2, "shape"),
        (np.zeros((2, 2), int), np.full((2, 2), 3), 3, r"outside \[0, 3\)"),
        (np.full((2, 2), -1), np.zeros((2, 2), int), 3, r"pred has labels outside"),
        (np.full((2, 2), 0.5), np.zeros((2, 2), int), 3, "non-integer"),
    ],
)
def test_bad_label_maps_are_rejected_with_a_clear_error(pred, label, num_classes, match):
    with pytest.raises(ValueError, match=match):
        dice_per_class(pred, label, num_classes)


def test_bad_spacing_is_rejected():
    with pytest.raises(ValueError, match="need 3"):
        roi_size_per_class(np.zeros((2, 2, 2), int), 2, spacing=(1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        roi_size_per_class(np.zeros((2, 2, 2), int), 2, spacing=(1.0, 0.0, 1.0))
