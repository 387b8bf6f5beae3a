"""Dice, HD95 and NSD against MONAI itself (`monai.metrics`), on random smooth blobs and hand-made
masks, isotropic and anisotropic spacing, and every empty-mask case.

MONAI (with torch's CPU build) is the `test` extra: `pip install -e ".[test]"`. CI installs it
and fails these tests if it is missing; elsewhere they skip saying so (tests/conftest.py).

Where the definitions part (empty masks) the tests pin both sides of the difference:
- Dice: label present -> MONAI's `compute_dice`; label empty, prediction not -> 0 as MONAI with
  `ignore_empty=False`; both empty -> NaN as MONAI with `ignore_empty=True` (the default).
- HD95: MONAI's `compute_hausdorff_distance(percentile=95)` in every case; either mask empty ->
  NaN in both (MONAI 1.6).
- NSD: MONAI's `compute_surface_dice` in every case, empty ones included (one empty -> 0, both ->
  NaN).
"""

import warnings

import numpy as np
import pytest
from diffseg3d.core.metrics import dice_per_class, hd95_per_class, nsd_per_class
from scipy import ndimage

pytestmark = pytest.mark.requires("monai")

SPACINGS = ((1.0, 1.0, 1.0), (0.75, 0.75, 2.5), (1.5, 0.6, 1.0))


@pytest.fixture(scope="module")
def monai():
    """MONAI's three metric functions as NumPy in, NumPy (batch 0, foreground classes) out."""
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance
    from monai.metrics.surface_dice import compute_surface_dice

    def one_hot(label_map, classes):
        return torch.from_numpy(np.eye(classes)[label_map].transpose(3, 0, 1, 2)[None].copy())

    def call(fn, pred, label, classes, **kwargs):
        with warnings.catch_warnings():  # MONAI warns about each empty class; the tests check them
            warnings.simplefilter("ignore")
            out = fn(one_hot(pred, classes), one_hot(label, classes), include_background=False,
                     **kwargs)
        return out[0].double().numpy()

    return {
        "dice": lambda p, y, c, ignore_empty=True: call(
            compute_dice, p, y, c, ignore_empty=ignore_empty),
        "hd95": lambda p, y, c, spacing: call(
            compute_hausdorff_distance, p, y, c, percentile=95, spacing=spacing),
        "nsd": lambda p, y, c, spacing, tol: call(
            compute_surface_dice, p, y, c, class_thresholds=[tol] * (c - 1), spacing=spacing),
    }


def _blobs(rng, shape=(16, 13, 9), classes=4, noise=0.6):
    """A label map of smooth blobs (classes 0..C-1) and a prediction perturbing it."""
    fields = ndimage.gaussian_filter(rng.standard_normal((2, classes, *shape)), (0, 0, 2, 2, 1))
    label = np.argmax(fields[0], axis=0)
    pred = np.argmax(fields[0] + noise * fields[1], axis=0)
    return pred, label


def _planes(gap, shape=(5, 6, 8)):
    """Label: the plane z=1 of class 1; prediction: the plane z=1+gap of class 1."""
    label = np.zeros(shape, dtype=np.int64)
    pred = np.zeros_like(label)
    label[:, :, 1] = 1
    pred[:, :, 1 + gap] = 1
    return pred, label


def _empty_cases():
    """Class 1 only in the label, class 2 only in the prediction, class 3 in neither."""
    label = np.zeros((6, 6, 5), dtype=np.int64)
    label[1:4, 1:4, 1:3] = 1
    pred = np.zeros_like(label)
    pred[4:6, 3:6, 2:5] = 2
    return pred, label


@pytest.mark.parametrize("spacing", SPACINGS)
def test_hd95_equals_monai_on_random_blobs(monai, spacing):
    rng = np.random.default_rng(int(10 * spacing[2]))
    for _ in range(2):
        pred, label = _blobs(rng)
        got = hd95_per_class(pred, label, 4, spacing)
        expected = monai["hd95"](pred, label, 4, spacing)
        assert np.isfinite(got).all()  # every class in both maps: the compared case
        # MONAI's distances are float32 (torch.quantile); ours float64.
        np.testing.assert_allclose(got, expected, rtol=1e-5)


@pytest.mark.parametrize(("gap", "spacing", "expected"), [
    (3, (1.0, 1.0, 2.5), 7.5),  # every voxel of each plane 3 x 2.5 mm from the other
    (1, (0.7, 0.9, 1.5), 1.5),
])
def test_hd95_equals_monai_on_parallel_planes(monai, gap, spacing, expected):
    pred, label = _planes(gap)
    got = hd95_per_class(pred, label, 2, spacing)
    assert got[0] == pytest.approx(expected)
    assert monai["hd95"](pred, label, 2, spacing)[0] == pytest.approx(expected)


def test_hd95_on_empty_masks_is_nan_as_monai(monai):
    """Label only, prediction only, neither: NaN in all three (excluded from means, counted)."""
    pred, label = _empty_cases()
    got = hd95_per_class(pred, label, 4, (1.0, 1.0, 2.0))
    theirs = monai["hd95"](pred, label, 4, (1.0, 1.0, 2.0))
    assert np.isnan(theirs).all()
    assert np.isnan(got).all()


@pytest.mark.parametrize(("spacing", "tolerance"), [
    ((1.0, 1.0, 1.0), 1.0), ((0.75, 0.75, 2.5), 2.0), ((1.5, 0.6, 1.0), 1.2),
    ((0.8, 1.1, 3.0), 0.0),
])
def test_nsd_equals_monai_on_random_blobs(monai, spacing, tolerance):
    rng = np.random.default_rng(11)
    pred, label = _blobs(rng)
    pred[pred == 3] = 0  # class 3 empty in the prediction only: 0 in both
    got = nsd_per_class(pred, label, 4, spacing, tolerance_mm=tolerance)
    expected = monai["nsd"](pred, label, 4, spacing, tolerance)
    assert got[2] == 0.0 and 0.0 < got[0] < 1.0
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("gap", "tolerance", "expected"), [(1, 2.0, 1.0), (2, 2.0, 0.0),
                                                             (2, 3.0, 1.0)])
def test_nsd_equals_monai_on_parallel_planes(monai, gap, tolerance, expected):
    """The planes are gap x 1.5 mm apart: within the tolerance or not, all voxels at once."""
    pred, label = _planes(gap)
    spacing = (0.7, 0.9, 1.5)
    assert nsd_per_class(pred, label, 2, spacing, tolerance_mm=tolerance)[0] == expected
    assert monai["nsd"](pred, label, 2, spacing, tolerance)[0] == expected


def test_nsd_equals_monai_on_empty_masks(monai):
    pred, label = _empty_cases()
    got = nsd_per_class(pred, label, 4, (1.0, 1.0, 2.0), tolerance_mm=2.0)
    theirs = monai["nsd"](pred, label, 4, (1.0, 1.0, 2.0), 2.0)
    assert got[0] == theirs[0] == 0.0 and got[1] == theirs[1] == 0.0
    assert np.isnan(got[2]) and np.isnan(theirs[2])


def test_dice_equals_monai_on_random_blobs(monai):
    rng = np.random.default_rng(5)
    for _ in range(3):
        pred, label = _blobs(rng, noise=1.0)
        got = dice_per_class(pred, label, 4)
        assert np.isfinite(got).all() and (got < 1).all()
        np.testing.assert_allclose(got, monai["dice"](pred, label, 4), rtol=1e-6)


def test_dice_equals_monai_on_a_hand_counted_overlap(monai):
    """Label 4x4x2 = 32 voxels, prediction shifted by one along x: 24 shared -> 48 / 64."""
    label = np.zeros((6, 6, 4), dtype=np.int64)
    label[1:5, 1:5, 1:3] = 1
    pred = np.roll(label, 1, axis=0)
    assert dice_per_class(pred, label, 2)[0] == pytest.approx(0.75)
    assert monai["dice"](pred, label, 2)[0] == pytest.approx(0.75)


def test_dice_on_empty_masks_matches_monai_ignore_empty_false_and_true(monai):
    pred, label = _empty_cases()
    got = dice_per_class(pred, label, 4)
    kept = monai["dice"](pred, label, 4, ignore_empty=False)  # label empty: 0, or 1 if both are
    ignored = monai["dice"](pred, label, 4, ignore_empty=True)  # label empty: NaN
    assert got[0] == kept[0] == ignored[0] == 0.0  # in the label only
    assert got[1] == kept[1] == 0.0 and np.isnan(ignored[1])  # in the prediction only
    assert np.isnan(got[2]) and np.isnan(ignored[2]) and kept[2] == 1.0  # in neither
