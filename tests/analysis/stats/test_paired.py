"""Paired tests equal scipy / statsmodels on the same numbers; effects are found, nulls are not."""

import numpy as np
import pytest
from diffseg3d.analysis.stats.paired import format_pvalue, holm, paired_test
from scipy import stats
from statsmodels.stats.multitest import multipletests


def _pair(seed, effect, n=30):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.75, 0.08, n)  # per-case Dice spread across cases
    b = a + effect + rng.normal(0, 0.02, n)  # paired: same cases, small per-case noise
    return a, b


def test_paired_test_equals_scipy_called_directly():
    a, b = _pair(0, 0.01)
    res = paired_test(a, b, alpha=0.01)
    t = stats.ttest_rel(b, a)
    w = stats.wilcoxon(b, a)
    assert res.t_statistic == pytest.approx(t.statistic, rel=1e-12)
    assert res.t_pvalue == pytest.approx(t.pvalue, rel=1e-12)
    assert res.wilcoxon_statistic == pytest.approx(w.statistic)
    assert res.wilcoxon_pvalue == pytest.approx(w.pvalue, rel=1e-12)
    # 99 % CI of the mean paired difference, closed form from the t distribution.
    d = b - a
    half = stats.t.ppf(0.995, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert res.mean_diff == pytest.approx(d.mean())
    assert (res.ci_low, res.ci_high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert res.confidence == pytest.approx(0.99)
    assert (res.mean_a, res.mean_b, res.n) == (pytest.approx(a.mean()), pytest.approx(b.mean()),
                                               30)


def test_known_effect_is_detected_and_null_is_not():
    effect = paired_test(*_pair(1, 0.03))
    null = paired_test(*_pair(2, 0.0))
    assert effect.t_pvalue < 0.01 and effect.wilcoxon_pvalue < 0.01
    assert effect.ci_low > 0
    assert null.t_pvalue > 0.01 and null.wilcoxon_pvalue > 0.01
    assert null.ci_low < 0 < null.ci_high


def test_holm_equals_statsmodels_and_hand_values():
    p = [0.01, 0.04, 0.03]
    # Holm by hand: sorted 0.01*3 = 0.03, 0.03*2 = 0.06, max(0.04*1, 0.06) = 0.06.
    np.testing.assert_allclose(holm(p), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1])


def test_holm_keeps_nan_and_adjusts_the_rest_only():
    out = holm([0.02, np.nan, 0.01])
    assert np.isnan(out[1])
    np.testing.assert_allclose(out[[0, 2]], multipletests([0.02, 0.01], method="holm")[1])


def test_too_few_pairs_give_nan_not_an_error():
    res = paired_test(np.array([0.5]), np.array([0.7]))
    assert res.n == 1 and np.isnan(res.t_pvalue) and res.mean_diff == pytest.approx(0.2)


def test_identical_samples_give_nan_wilcoxon():
    a = np.array([0.5, 0.6, 0.7])
    res = paired_test(a, a.copy())
    assert res.mean_diff == 0 and np.isnan(res.wilcoxon_pvalue)


def test_unequal_shapes_are_rejected():
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        paired_test(np.zeros(3), np.zeros(4))


@pytest.mark.parametrize("p, text", [(0.0004, "<0.001"), (0.0123, "0.012"), (0.5, "0.500"),
                                     (np.nan, "n/a")])
def test_format_pvalue(p, text):
    assert format_pvalue(p) == text
