"""The smallest mean paired difference a study can detect (`statsmodels.stats.power.TTestPower`).

mde80 = d80 * sd_diff, where d80 is the standardised effect (Cohen's d of the paired
differences) that a two-sided one-sample t-test on `n_cases` differences detects with power 0.8
at the paper's alpha = 0.01 (`TTestPower().solve_power`), and sd_diff is the observed standard
deviation (ddof 1) of the per-case paired differences. A difference in Dice below mde80 is one
this study would miss more often than one time in five.
"""

from __future__ import annotations

import math

import numpy as np
from diffseg3d.analysis.stats import ALPHA
from scipy import optimize
from statsmodels.stats.power import TTestPower

POWER = 0.8


def detectable_effect_size(n_cases: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """d80: standardised effect detected with `power` by a two-sided paired t-test on `n_cases`.

    `TTestPower.solve_power`; where its answer misses the requested power by more than 1e-6
    (with 3 cases it stops short: power 0.787 at alpha 0.01), the root of `TTestPower.power` -
    power found by `scipy.optimize.brentq`. NaN when n_cases < 3.
    """
    if n_cases < 3:
        return math.nan
    solver = TTestPower()

    def shortfall(d: float) -> float:
        achieved = solver.power(effect_size=d, nobs=n_cases, alpha=alpha,
                                alternative="two-sided")
        if not np.isfinite(achieved):
            # The far tail P(T < -t_crit) of scipy's noncentral t comes back NaN where it is
            # below ~1e-15; the two-sided power is then the near tail alone, which is the
            # one-sided power at alpha / 2 (same critical value).
            achieved = solver.power(effect_size=d, nobs=n_cases, alpha=alpha / 2,
                                    alternative="larger")
        return float(achieved) - power

    d = float(solver.solve_power(effect_size=None, nobs=n_cases, alpha=alpha, power=power,
                                 alternative="two-sided"))
    if np.isfinite(d) and abs(shortfall(d)) < 1e-6:
        return d
    high = 1.0
    while shortfall(high) < 0:  # bracket the root (far beyond it the power is NaN)
        high *= 2
    return float(optimize.brentq(shortfall, 1e-6, high, xtol=1e-12))


def mde80(sd_diff: float, n_cases: int, alpha: float = ALPHA) -> float:
    """Smallest mean paired difference (in the score's units, e.g. Dice) detected with 80% power.

    sd_diff: standard deviation (ddof 1) of the per-case paired differences; NaN in, NaN out.
    """
    if not np.isfinite(sd_diff):
        return math.nan
    return detectable_effect_size(n_cases, alpha, POWER) * float(sd_diff)
