"""The BCa interval equals scipy's bootstrap called directly; degenerate inputs say why."""

import numpy as np
import pytest
from diffseg3d.analysis.stats.bootstrap import BOOTSTRAP_SEED, bootstrap_interval
from scipy import stats


def _pair(seed=0, n=12, effect=0.02):
    rng = np.random.default_rng(seed)
    a = rng.normal(0.75, 0.08, n)
    return a, a + effect + rng.normal(0, 0.02, n)


def test_interval_equals_scipy_bootstrap_paired_bca_with_the_same_seed():
    a, b = _pair()
    res = bootstrap_interval(a, b, alpha=0.01)
    direct = stats.bootstrap((a, b), lambda x, y: np.mean(y - x), paired=True, vectorized=False,
                             method="BCa", confidence_level=0.99, n_resamples=9999,
                             rng=np.random.default_rng(BOOTSTRAP_SEED))
    assert res.low == pytest.approx(direct.confidence_interval.low, rel=1e-12)
    assert res.high == pytest.approx(direct.confidence_interval.high, rel=1e-12)
    assert res.confidence == pytest.approx(0.99) and res.note == ""
    d = b - a
    assert res.low < d.mean() < res.high
    # Same scores, same interval (fixed seed); a 95% interval is strictly inside the 99% one.
    assert bootstrap_interval(a, b) == res
    narrow = bootstrap_interval(a, b, alpha=0.05)
    assert res.low < narrow.low < narrow.high < res.high


def test_case_order_does_not_matter_but_the_pairing_does():
    a, b = _pair(1)
    perm = np.random.default_rng(5).permutation(len(a))
    res = bootstrap_interval(a, b)
    # Shuffled cases: the same resampled distribution up to which index is drawn; the pairing
    # kept, the interval stays about the same width. Breaking the pairing widens it.
    shuffled = bootstrap_interval(a[perm], b[perm])
    unpaired = bootstrap_interval(a, b[perm])
    width = res.high - res.low
    assert shuffled.high - shuffled.low == pytest.approx(width, rel=0.25)
    assert unpaired.high - unpaired.low > 2 * width


@pytest.mark.parametrize("a, b, reason", [
    ([0.5, 0.6], [0.6, 0.7], "too few"),
    ([0.5, 0.6, 0.7], [0.6, 0.7, 0.8], "same difference"),
])
def test_degenerate_inputs_give_nan_with_the_reason(a, b, reason):
    res = bootstrap_interval(np.array(a), np.array(b))
    assert np.isnan(res.low) and np.isnan(res.high) and reason in res.note


def test_unequal_shapes_are_rejected():
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        bootstrap_interval(np.zeros(3), np.zeros(4))
