"""Spearman: rho equals scipy; the permutation p equals an independent exact enumeration."""

import itertools

import numpy as np
import pytest
from diffseg3d.analysis.comparisons import add_setting_column
from diffseg3d.analysis.stats.spearman import roi_dice_spearman, spearman_with_permutation
from scipy import stats

from ..synthetic_runs import synthetic_frame


def _enumerated_p(x, y):
    rx, ry = stats.rankdata(x), stats.rankdata(y)
    r0 = np.corrcoef(rx, ry)[0, 1]
    rs = np.array([np.corrcoef(rx, p)[0, 1] for p in itertools.permutations(ry)])
    return np.mean(np.abs(rs) >= abs(r0) - 1e-12)


def test_exact_permutation_p_matches_enumeration_and_rho_matches_scipy():
    rng = np.random.default_rng(3)
    x = rng.lognormal(8, 1, 6)
    y = 0.5 + 0.05 * np.log(x) + rng.normal(0, 0.05, 6)
    res = spearman_with_permutation(x, y)
    ref = stats.spearmanr(x, y)
    assert res.exact and res.n == 6
    assert res.r == pytest.approx(ref.statistic)
    assert res.p == pytest.approx(ref.pvalue)
    assert res.p_perm == pytest.approx(_enumerated_p(x, y))


def test_random_permutations_beyond_eight_classes_are_seeded():
    rng = np.random.default_rng(4)
    x, y = rng.random(15), rng.random(15)
    one = spearman_with_permutation(x, y, n_resamples=999, seed=7)
    two = spearman_with_permutation(x, y, n_resamples=999, seed=7)
    assert not one.exact and one.p_perm == two.p_perm
    assert one.p_perm == pytest.approx(one.p, abs=0.1)  # both estimate the same null


def test_constant_input_gives_nan():
    res = spearman_with_permutation(np.arange(5.0), np.ones(5))
    assert np.isnan(res.r) and np.isnan(res.p_perm)


def test_roi_dice_spearman_per_data_set_and_setting():
    frame = add_setting_column(synthetic_frame(data_sets=("prostate-mr", "amos-ct"),
                                               settings=("default", "unet"), n_cases=5))
    table = roi_dice_spearman(frame)
    assert len(table) == 4  # 2 data sets x 2 settings
    # Dice rises with class volume by construction: rho = 1, and 4 classes give the smallest
    # exact two-sided p, 2 / 4! (the identity and the reversed pairing).
    np.testing.assert_allclose(table["r"], 1.0)
    np.testing.assert_allclose(table["p_perm"], 2 / 24)
