"""NSD (MONAI definition) vs hand-computed geometry and a brute-force implementation (MONAI
itself: test_monai_equivalence.py)."""

import numpy as np
import pytest
from diffseg3d.core.metrics.nsd import nsd_binary, nsd_per_class
from scipy import ndimage
from scipy.spatial.distance import cdist


def _surface_points(mask, spacing):
    """Surface voxels (mask XOR 6-connected erosion, outside = background) as points in mm,
    computed without scipy.ndimage: a voxel is interior when all 6 neighbours are in the mask."""
    padded = np.pad(mask, 1)
    inner = tuple(slice(1, -1) for _ in range(mask.ndim))
    interior = mask.copy()
    for axis in range(mask.ndim):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[inner]
    return np.argwhere(mask & ~interior) * np.asarray(spacing, dtype=np.float64)


def _brute_force_nsd(pred_mask, label_mask, spacing, tolerance):
    """MONAI's definition with all-pairs distances: surface points within the tolerance of the
    other surface, over all surface points; NaN if both are empty, 0 if one is."""
    a, b = _surface_points(pred_mask, spacing), _surface_points(label_mask, spacing)
    if len(a) + len(b) == 0:
        return float("nan")
    if len(a) == 0 or len(b) == 0:
        return 0.0
    distances = cdist(a, b)
    within = np.sum(distances.min(1) <= tolerance) + np.sum(distances.min(0) <= tolerance)
    return within / (len(a) + len(b))


def _random_case(rng, shape=(14, 12, 8), classes=3):
    fields = ndimage.gaussian_filter(rng.standard_normal((2, classes, *shape)), (0, 0, 2, 2, 1))
    label = np.argmax(fields[0], axis=0)  # classes 0..C-1 as smooth blobs
    pred = np.argmax(fields[0] + 0.6 * fields[1], axis=0)
    return pred, label


@pytest.mark.parametrize(("gap_slices", "expected"), [(1, 1.0), (2, 0.0)])
def test_parallel_planes(gap_slices, expected):
    """One-voxel-thick planes are all surface; every voxel of each sits exactly gap * 1.5 mm
    from the other plane: within the 2 mm tolerance at 1.5 mm, outside it at 3 mm."""
    label = np.zeros((5, 6, 8), dtype=np.int32)
    pred = np.zeros_like(label)
    label[:, :, 2] = 1
    pred[:, :, 2 + gap_slices] = 1
    got = nsd_per_class(pred, label, 2, spacing=(0.7, 0.9, 1.5), tolerance_mm=2.0)
    assert got[0] == expected


def test_tolerance_is_inclusive():
    label = np.zeros((4, 4, 6), dtype=np.int32)
    pred = np.zeros_like(label)
    label[:, :, 1] = 1
    pred[:, :, 3] = 1  # 2 slices x 1.25 mm = 2.5 mm apart
    assert nsd_per_class(pred, label, 2, (1.0, 1.0, 1.25), tolerance_mm=2.5)[0] == 1.0
    assert nsd_per_class(pred, label, 2, (1.0, 1.0, 1.25), tolerance_mm=2.49)[0] == 0.0


def test_partial_overlap_hand_count():
    """Label: plane z=1 over 4x4 (16 surface voxels). Pred: the same plane's x<2 half at z=1
    (8 voxels, all within) plus a plane z=5 over x>=2 (8 voxels, 4 mm away with 1 mm voxels).
    Pred's z=1 voxels are 0 mm from the label; its z=5 ones 4 mm. Label voxels with x<2: 0 mm;
    with x>=2: nearest pred voxel is (x=1, z=1), 1..2 mm away in x -> within 2 mm for x=2,3.
    So within = 8 + 16 over 16 + 16 surface voxels."""
    label = np.zeros((4, 4, 7), dtype=np.int32)
    label[:, :, 1] = 1
    pred = np.zeros_like(label)
    pred[:2, :, 1] = 1
    pred[2:, :, 5] = 1
    got = nsd_per_class(pred, label, 2, (1.0, 1.0, 1.0), tolerance_mm=2.0)[0]
    assert got == pytest.approx(24 / 32)
    assert got == pytest.approx(_brute_force_nsd(pred == 1, label == 1, (1, 1, 1), 2.0))


def test_matches_brute_force_on_random_anisotropic_masks():
    rng = np.random.default_rng(3)
    spacing = (0.75, 1.1, 2.5)
    for tolerance in (0.0, 1.0, 2.0, 3.7):
        pred, label = _random_case(rng)
        got = nsd_per_class(pred, label, 3, spacing, tolerance_mm=tolerance)
        for c in (1, 2):
            expected = _brute_force_nsd(pred == c, label == c, spacing, tolerance)
            assert got[c - 1] == pytest.approx(expected, rel=1e-12)


def test_empty_masks():
    """Both empty -> NaN; exactly one empty -> 0 (MONAI: infinite distances)."""
    label = np.zeros((4, 4, 4), dtype=np.int32)
    label[1:3, 1:3, 1:3] = 1
    pred = np.zeros_like(label)
    pred[0, 0, 0] = 2
    got = nsd_per_class(pred, label, 4, (1.0, 1.0, 2.0))
    assert got[0] == 0.0  # class 1 missing in pred
    assert got[1] == 0.0  # class 2 missing in label
    assert np.isnan(got[2])  # class 3 in neither
    assert np.isnan(nsd_binary(np.zeros((3, 3, 3)), np.zeros((3, 3, 3)), (1, 1, 1)))


def test_identical_masks_give_one_and_bad_tolerance_raises():
    label = np.zeros((6, 6, 4), dtype=np.int32)
    label[1:5, 2:5, 1:3] = 1
    assert nsd_per_class(label, label, 2, (1.0, 1.0, 3.0), tolerance_mm=0.0)[0] == 1.0
    with pytest.raises(ValueError, match="tolerance"):
        nsd_per_class(label, label, 2, (1.0, 1.0, 3.0), tolerance_mm=-1.0)
