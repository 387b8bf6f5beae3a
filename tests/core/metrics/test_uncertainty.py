"""Spearman r between per-case entropy and Dice, against hand-ranked values."""

import math

import numpy as np
import pytest
from diffseg3d.core.metrics import uncertainty_dice_spearman


def test_perfectly_informative_uncertainty_is_minus_one():
    entropy = np.array([0.1, 0.4, 0.2, 0.3])
    dice = np.array([0.9, 0.6, 0.8, 0.7])
    assert uncertainty_dice_spearman(entropy, dice) == pytest.approx(-1.0)


def test_by_hand_ranks_and_nan_cases_skipped():
    entropy = np.array([0.5, 0.1, 0.3, 0.2, 9.0])
    dice = np.array([0.2, 0.5, 0.9, 0.4, math.nan])  # the NaN case is left out
    # Ranks of the first four: entropy (4, 1, 3, 2), Dice (1, 3, 4, 2); d = (3, -2, -1, 0).
    expected = 1 - 6 * (9 + 4 + 1 + 0) / (4 * (16 - 1))
    assert uncertainty_dice_spearman(entropy, dice) == pytest.approx(expected)


def test_too_few_or_constant_cases_give_nan():
    assert math.isnan(uncertainty_dice_spearman(np.array([0.1, 0.2]), np.array([0.5, 0.4])))
    assert math.isnan(uncertainty_dice_spearman(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4])))
    with pytest.raises(ValueError, match="same"):
        uncertainty_dice_spearman(np.zeros(3), np.zeros(4))
