"""Best-validation selection: the released score (binary Dice with background) and the tie
rules, on hand-made label maps and a hand-made sequence of validations with a tie."""

import math

import numpy as np
import pytest
from diffseg3d.core.metrics.validation_selection import (
    VAL_METRICS,
    beats_best,
    binary_dice_with_background,
    mean_binary_dice_score,
    validation_score,
)

# Two cases of 2x3 voxels, 3 classes.
LABELS = np.array([[[0, 0, 1], [1, 2, 2]], [[0, 0, 0], [0, 1, 1]]])
PREDS = np.array([[[0, 1, 1], [1, 2, 0]], [[0, 0, 0], [0, 0, 1]]])


def test_binary_dice_with_background_by_hand():
    # Case 0: class 0: P = {00, 12}, L = {00, 01}: 2*1/(2+2) = 0.5; class 1: P = {01, 02, 10},
    # L = {02, 10}: 2*2/(3+2) = 0.8; class 2: P = {11}, L = {11, 12}: 2*1/(1+2) = 2/3.
    np.testing.assert_allclose(binary_dice_with_background(PREDS[0], LABELS[0], 3),
                               [0.5, 0.8, 2 / 3])
    # Case 1: class 0: P = {00, 01, 02, 10, 11}, L = {00, 01, 02, 10}: 2*4/(5+4) = 8/9;
    # class 1: P = {12}, L = {11, 12}: 2/3; class 2 in neither map: NaN.
    got = binary_dice_with_background(PREDS[1], LABELS[1], 3)
    np.testing.assert_allclose(got[:2], [8 / 9, 2 / 3])
    assert math.isnan(got[2])


def test_released_score_and_foreground_score_by_hand():
    case0 = (0.5 + 0.8 + 2 / 3) / 3
    case1 = (8 / 9 + 2 / 3) / 2  # NaN class skipped
    np.testing.assert_allclose(mean_binary_dice_score(PREDS, LABELS, 3), (case0 + case1) / 2)
    np.testing.assert_allclose(
        validation_score("binary_dice_with_background", PREDS, LABELS, 3), (case0 + case1) / 2)
    # Foreground only: case 0 (0.8 + 2/3) / 2, case 1 2/3.
    np.testing.assert_allclose(validation_score("foreground_dice", PREDS, LABELS, 3),
                               ((0.8 + 2 / 3) / 2 + 2 / 3) / 2)
    assert VAL_METRICS == ("foreground_dice", "binary_dice_with_background")
    with pytest.raises(ValueError, match="'hd95'"):
        validation_score("hd95", PREDS, LABELS, 3)


def _select(scores, ties):
    """Step of the best validation of (step, score) pairs under `beats_best`."""
    best_step, best = 0, None
    for step, score in scores:
        if beats_best(score, best, ties):
            best_step, best = step, score
    return best_step


def test_tie_rules_on_a_hand_made_sequence():
    """Validations every 500 steps: 0.70, 0.80, NaN, 0.80 (a tie), 0.75. The earlier rule keeps
    step 1000, the released later rule step 2000; NaN never wins, not even first."""
    scores = [(500, 0.70), (1000, 0.80), (1500, math.nan), (2000, 0.80), (2500, 0.75)]
    assert _select(scores, "earlier") == 1000
    assert _select(scores, "later") == 2000
    assert _select([(500, math.nan), (1000, 0.1)], "later") == 1000
    assert _select([(500, math.nan)], "earlier") == 0
    with pytest.raises(ValueError, match="'first'"):
        beats_best(0.5, 0.4, "first")
