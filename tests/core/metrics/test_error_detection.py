"""AUROC / AP of uncertainty against scikit-learn on the same numbers, and the region."""

import math

import numpy as np
import pytest
from diffseg3d.core.metrics.error_detection import (
    auroc,
    average_precision,
    error_detection,
    evaluation_region,
)
from sklearn.metrics import average_precision_score, roc_auc_score

RNG = np.random.default_rng(0)
# ties on purpose: scores on a coarse grid
SCORES = np.round(RNG.random(200), 1)
WRONG = RNG.random(200) < 0.3 + 0.4 * SCORES


def test_auroc_and_ap_equal_scikit_learn_with_ties():
    assert auroc(SCORES, WRONG) == pytest.approx(roc_auc_score(WRONG, SCORES), abs=1e-12)
    assert average_precision(SCORES, WRONG) == pytest.approx(
        average_precision_score(WRONG, SCORES), abs=1e-12)


def test_perfect_constant_and_undefined():
    y = np.array([False, False, True, True])
    assert auroc([0.1, 0.2, 0.8, 0.9], y) == 1.0
    assert average_precision([0.1, 0.2, 0.8, 0.9], y) == 1.0
    assert auroc([0.5] * 4, y) == 0.5  # a constant score ranks nothing
    assert average_precision([0.5] * 4, y) == pytest.approx(average_precision_score(y, [0.5] * 4))
    assert math.isnan(auroc([0.1, 0.2], [False, False]))  # no error voxel
    assert math.isnan(average_precision([0.1, 0.2], [False, False]))


def test_region_dilates_the_foreground_union():
    pred = np.zeros((1, 9), int)
    label = np.zeros((1, 9), int)
    pred[0, 4] = 1
    assert evaluation_region(pred, label, margin=2)[0].tolist() == [0, 0, 1, 1, 1, 1, 1, 0, 0]
    assert not evaluation_region(label, label).any()  # nothing anywhere: empty region


def test_error_detection_inside_region():
    label = np.array([[0, 0, 1, 1, 0, 0, 0, 0]])
    pred = np.array([[0, 1, 1, 0, 0, 0, 0, 0]])   # errors at voxels 1 and 3
    unc = np.array([[0.0, 0.9, 0.2, 0.8, 0.1, 0.3, 0.0, 0.0]])
    region = evaluation_region(pred, label, margin=1)  # voxels 0..4
    out = error_detection(unc, pred, label, region)
    assert out["region_voxels"] == 5 and out["error_voxels"] == 2
    assert out["auroc"] == pytest.approx(roc_auc_score([0, 1, 0, 1, 0], unc[0, :5]))
    assert out["ap"] == pytest.approx(1.0)
    nothing = error_detection(unc, pred, label, np.zeros_like(region))
    assert math.isnan(nothing["auroc"]) and math.isnan(nothing["ap"])
