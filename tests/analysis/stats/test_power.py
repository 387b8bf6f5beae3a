"""mde80 equals statsmodels' TTestPower and the noncentral t distribution (scipy) by hand."""

import numpy as np
import pytest
from diffseg3d.analysis.stats.power import detectable_effect_size, mde80
from scipy import stats
from statsmodels.stats.power import TTestPower


@pytest.mark.parametrize("n", [3, 8, 20])
def test_mde80_equals_statsmodels_and_has_power_0_8_by_the_noncentral_t(n):
    sd = 0.031
    d = TTestPower().solve_power(effect_size=None, nobs=n, alpha=0.01, power=0.8,
                                 alternative="two-sided")
    if n > 3:  # with 3 cases statsmodels' solver stops short of power 0.8 (0.787)
        assert mde80(sd, n) == pytest.approx(d * sd, rel=1e-4)  # statsmodels solver accuracy
    # Power of a two-sided paired t-test at alpha 0.01 for a true mean difference mde80:
    # P(|T| > t_crit) with T ~ noncentral t(n - 1, mde80 / (sd / sqrt(n))).
    df, nc = n - 1, mde80(sd, n) / (sd / np.sqrt(n))
    crit = stats.t.ppf(1 - 0.01 / 2, df)
    power = stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)
    assert power == pytest.approx(0.8, abs=1e-6)


def test_more_cases_detect_smaller_effects_and_eight_cases_need_1_6_sd():
    sizes = [detectable_effect_size(n) for n in (4, 8, 16, 32)]
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[1] == pytest.approx(1.596, abs=1e-3)  # 8 cases: 1.6 sd of the differences


def test_too_few_cases_or_no_spread_give_nan():
    assert np.isnan(mde80(0.02, 2)) and np.isnan(mde80(float("nan"), 10))
