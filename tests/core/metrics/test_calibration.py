"""ECE and reliability bins against a hand-computed example."""

import math

import numpy as np
import pytest
from diffseg3d.core.metrics.calibration import expected_calibration_error, reliability_bins

# 4 voxels, 2 classes; confidences 0.9, 0.9, 0.6, 1.0.
PROBS = np.array([[0.9, 0.1], [0.1, 0.9], [0.4, 0.6], [0.0, 1.0]])
LABEL = np.array([0, 0, 1, 1])  # right, wrong, right, right


def test_bins_and_ece_by_hand():
    bins = reliability_bins(PROBS, LABEL, n_bins=10)
    # 0.9 -> (0.8, 0.9] bin 8; 0.6 -> (0.5, 0.6] bin 5; 1.0 -> bin 9.
    assert bins["count"].tolist() == [0, 0, 0, 0, 0, 1, 0, 0, 2, 1]
    np.testing.assert_allclose(bins["confidence"][[5, 8, 9]], [0.6, 1.8, 1.0])
    np.testing.assert_allclose(bins["correct"][[5, 8, 9]], [1.0, 1.0, 1.0])
    # ECE = 1/4 |1 - 0.6| + 2/4 |0.5 - 0.9| + 1/4 |1 - 1| = 0.1 + 0.2 = 0.3
    assert expected_calibration_error(bins) == pytest.approx(0.3)


def test_region_restricts_and_bins_add_over_cases():
    region = np.array([True, True, False, False])
    part = reliability_bins(PROBS, LABEL, region, n_bins=10)
    rest = reliability_bins(PROBS, LABEL, ~region, n_bins=10)
    assert expected_calibration_error(part) == pytest.approx(0.4)  # |0.5 - 0.9|
    pooled = {k: part[k] + rest[k] for k in part}
    assert expected_calibration_error(pooled) == pytest.approx(0.3)


def test_empty_region_is_nan_and_default_has_15_bins():
    bins = reliability_bins(PROBS, LABEL, np.zeros(4, bool))
    assert bins["count"].shape == (15,) and bins["count"].sum() == 0
    assert math.isnan(expected_calibration_error(bins))
