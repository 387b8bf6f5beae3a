"""Synthetic studies with a known effect and known case, seed and residual spreads: the BCa
interval covers the mean difference of the trained runs at about its level, and the mixed model
recovers the effect. Deterministic (fixed generators)."""

import numpy as np
import pytest
from diffseg3d.analysis.stats.bootstrap import bootstrap_interval
from diffseg3d.analysis.stats.mixed_model import mixed_model_test

from .test_mixed_model import long_study

EFFECT, SD_CASE, SD_SEED, SD_RESIDUAL = 0.02, 0.05, 0.01, 0.02


def _seed_means(long):
    wide = long.groupby(["case", "setting"])["score"].mean().unstack("setting")
    return wide["a"].to_numpy(), wide["b"].to_numpy()


def run_level_target(long):
    """What resampling cases estimates: the effect plus the realised difference between the
    mean seed (run) effects of b and of a (training runs are not resampled)."""
    shifts = long.attrs["run_shift"]
    mean = {side: np.mean([v for (s, _), v in shifts.items() if s == side]) for side in "ab"}
    return EFFECT + mean["b"] - mean["a"]


def test_bootstrap_interval_covers_at_99_percent_within_5_points():
    """300 studies of 20 cases and 3 seeds per setting."""
    rng = np.random.default_rng(2026)
    covered, n_studies = 0, 300
    for i in range(n_studies):
        long = long_study(rng, n_cases=20, seeds=(0, 1, 2), effect=EFFECT, sd_case=SD_CASE,
                          sd_seed=SD_SEED, sd_residual=SD_RESIDUAL)
        a, b = _seed_means(long)
        interval = bootstrap_interval(a, b, n_resamples=2999, seed=i)
        covered += interval.low <= run_level_target(long) <= interval.high
    coverage = covered / n_studies
    assert abs(coverage - 0.99) <= 0.05, coverage


@pytest.mark.slow
def test_mixed_model_recovers_the_effect_and_the_spreads():
    rng = np.random.default_rng(7)
    estimates, sd_case, sd_seed = [], [], []
    for _ in range(150):
        long = long_study(rng, n_cases=12, seeds=(0, 1, 2), effect=EFFECT, sd_case=SD_CASE,
                          sd_seed=SD_SEED, sd_residual=SD_RESIDUAL)
        res = mixed_model_test(long)
        assert res.converged
        estimates.append(res.estimate)
        sd_case.append(res.sd_case)
        sd_seed.append(res.sd_seed)
    estimates = np.array(estimates)
    mc_se = estimates.std(ddof=1) / np.sqrt(len(estimates))
    assert abs(estimates.mean() - EFFECT) < 3 * mc_se
    # Its spread across studies is the closed form sqrt(2 sd_seed^2/3 + 2 sd_res^2/(12 * 3)).
    expected_sd = np.sqrt(2 * SD_SEED**2 / 3 + 2 * SD_RESIDUAL**2 / 36)
    assert estimates.std(ddof=1) == pytest.approx(expected_sd, rel=0.15)
    assert np.median(sd_case) == pytest.approx(SD_CASE, rel=0.2)
    assert np.median(sd_seed) == pytest.approx(SD_SEED, rel=0.5)
