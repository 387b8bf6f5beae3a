"""HD95 (MONAI definition) vs hand-computed geometry and a brute-force implementation."""

import numpy as np
import pytest
from diffseg3d.core.metrics import hd95_per_class
from scipy import ndimage
from scipy.spatial.distance import cdist


def _brute_force_hd95(pred_mask, label_mask, spacing):
    """Surface = mask voxels with a 6-neighbour outside the mask (or outside the image);
    all-pairs distances in mm; max of the two directed 95th percentiles."""

    def surface_points(mask):
        padded = np.pad(mask, 1)
        interior = np.ones_like(mask)
        for axis in range(mask.ndim):
            for shift in (-1, 1):
                neighbour = np.roll(padded, shift, axis=axis)[
                    tuple(slice(1, -1) for _ in range(mask.ndim))
                ]
                interior &= neighbour
        return np.argwhere(mask & ~interior) * np.asarray(spacing)

    a, b = surface_points(pred_mask), surface_points(label_mask)
    distances = cdist(a, b)
    return max(np.percentile(distances.min(1), 95), np.percentile(distances.min(0), 95))


def test_parallel_planes_with_anisotropic_spacing():
    label = np.zeros((5, 6, 8), dtype=np.int32)
    pred = np.zeros_like(label)
    label[:, :, 1] = 1
    pred[:, :, 4] = 1  # three slices apart along z, 2.5 mm each
    assert hd95_per_class(pred, label, 2, spacing=(1.0, 1.0, 2.5))[0] == pytest.approx(7.5)


@pytest.mark.parametrize(("axis", "expected"), [(0, 10.0), (1, 5.0)])
def test_shifted_cube(axis, expected):
    """3x3x3 cubes 5 voxels apart: pred surface voxels sit 3, 4 or 5 voxels from the label's
    nearest face (9, 8 and 9 of them), so the 95th percentile is the 5-voxel distance."""
    label = np.zeros((12, 12, 6), dtype=np.int32)
    label[1:4, 1:4, 1:4] = 1
    pred = np.roll(label, 5, axis=axis)
    spacing = (2.0, 1.0, 1.0)
    assert hd95_per_class(pred, label, 2, spacing)[0] == pytest.approx(expected)


def test_matches_brute_force_on_random_blobs():
    rng = np.random.default_rng(0)
    spacing = (0.75, 0.75, 2.5)
    for _ in range(3):
        fields = ndimage.gaussian_filter(rng.standard_normal((2, 3, 14, 12, 8)), (0, 0, 2, 2, 1))
        label = np.argmax(fields[0], axis=0)  # classes 0..2 as smooth blobs
        pred = np.argmax(fields[0] + 0.5 * fields[1], axis=0)
        got = hd95_per_class(pred, label, 3, spacing)
        for c in (1, 2):
            expected = _brute_force_hd95(pred == c, label == c, spacing)
            assert got[c - 1] == pytest.approx(expected, rel=1e-9)


def test_empty_masks_give_nan():
    label = np.zeros((4, 4, 4), dtype=np.int32)
    label[1:3, 1:3, 1:3] = 1
    pred = np.zeros_like(label)
    pred[0, 0, 0] = 2
    hd = hd95_per_class(pred, label, 4, (1.0, 1.0, 1.0))
    assert np.isnan(hd).all()  # class 1 missing in pred, 2 missing in label, 3 in both


def test_identical_masks_give_zero():
    label = np.zeros((6, 6, 4), dtype=np.int32)
    label[1:5, 2:5, 1:3] = 1
    assert hd95_per_class(label, label, 2, (1.0, 1.0, 3.0))[0] == 0.0
