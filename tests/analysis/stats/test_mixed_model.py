"""The mixed model equals statsmodels' MixedLM fitted directly, matches the balanced-design
closed forms, and says why there is no model with one seed."""

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from diffseg3d.analysis.stats.mixed_model import mixed_model_test


def long_study(rng, *, n_cases=10, seeds=(0, 1, 2), effect=0.02, sd_case=0.05, sd_seed=0.01,
               sd_residual=0.02):
    """One synthetic comparison: score = 0.7 + effect [b] + case + run + noise (long rows).
    `attrs["run_shift"]`: {(setting, seed): the run's drawn effect}."""
    case = rng.normal(0, sd_case, n_cases)
    rows, shifts = [], {}
    for setting, shift in (("a", 0.0), ("b", effect)):
        for seed in seeds:
            run = shifts[(setting, seed)] = rng.normal(0, sd_seed)
            noise = rng.normal(0, sd_residual, n_cases)
            rows += [(f"c{i:02d}", seed, setting, 0.7 + shift + case[i] + run + noise[i])
                     for i in range(n_cases)]
    frame = pd.DataFrame(rows, columns=["case", "seed", "setting", "score"])
    frame.attrs["run_shift"] = shifts
    return frame


def test_equals_mixedlm_built_from_its_matrices():
    long = long_study(np.random.default_rng(0))
    res = mixed_model_test(long)
    # The same model from explicit design matrices (no formulas): fixed intercept + setting b,
    # one group, variance components = indicator matrices of case and of run (setting, seed).
    exog = np.column_stack([np.ones(len(long)), (long["setting"] == "b").to_numpy(float)])
    case_ind = pd.get_dummies(long["case"]).to_numpy(float)
    run_ind = pd.get_dummies(long["setting"] + long["seed"].astype(str)).to_numpy(float)
    model = sm.MixedLM(long["score"].to_numpy(), exog, groups=np.zeros(len(long)),
                       exog_vc={"case": {0: case_ind}, "seed": {0: run_ind}})
    fit = model.fit(reml=True, method=["lbfgs", "powell"])
    assert res.estimate == pytest.approx(fit.fe_params[1], abs=1e-8)
    assert res.std_error == pytest.approx(fit.bse_fe[1], rel=1e-4)
    assert res.pvalue == pytest.approx(fit.pvalues[1], rel=1e-3)
    vc = dict(zip(model.exog_vc.names, fit.vcomp, strict=True))
    assert res.sd_case == pytest.approx(np.sqrt(vc["case"]), rel=1e-3)
    assert res.sd_seed == pytest.approx(np.sqrt(vc["seed"]), rel=1e-3)
    assert res.converged and res.n_seeds == 3 and res.n_obs == 60


def test_balanced_design_closed_forms():
    """Balanced (every run scores every case): the estimate is the difference of the means, and
    its variance 2 sd_seed^2 / S + 2 sd_residual^2 / (n S) (the case effects cancel)."""
    long = long_study(np.random.default_rng(1), n_cases=12, seeds=(0, 1, 2, 3))
    res = mixed_model_test(long)
    means = long.groupby("setting")["score"].mean()
    assert res.estimate == pytest.approx(means["b"] - means["a"], abs=1e-10)
    s, n = 4, 12
    se = np.sqrt(2 * res.sd_seed**2 / s + 2 * res.sd_residual**2 / (n * s))
    assert res.std_error == pytest.approx(se, rel=1e-3)


def test_one_seed_gives_no_model_and_says_why():
    long = long_study(np.random.default_rng(2), seeds=(0,))
    res = mixed_model_test(long)
    assert np.isnan(res.pvalue) and np.isnan(res.estimate) and res.n_seeds == 1
    assert "one seed per setting" in res.note


def test_bad_input_names_the_problem():
    long = long_study(np.random.default_rng(3))
    with pytest.raises(ValueError, match="lacks columns"):
        mixed_model_test(long.drop(columns="seed"))
    with pytest.raises(ValueError, match="'a' or 'b'"):
        mixed_model_test(long.replace({"setting": {"b": "c"}}))


def test_settings_scored_from_the_same_runs_share_the_seed_level():
    """Two samplers of the same trained runs (Table 4): the run effect is common to both
    settings and cancels; the SE is the residual part alone, sqrt(2 sd_residual^2 / (n S))."""
    long = long_study(np.random.default_rng(4), n_cases=12, seeds=(0, 1, 2), sd_seed=0.03)
    shifts = long.attrs["run_shift"]
    # Make b's run effect a's (same trained run): subtract b's draw, add a's.
    fix = [shifts[("a", s)] - shifts[("b", s)] if setting == "b" else 0.0
           for setting, s in zip(long["setting"], long["seed"], strict=True)]
    shared = long.assign(score=long["score"] + fix, run="run" + long["seed"].astype(str))
    res = mixed_model_test(shared)
    separate = mixed_model_test(shared.drop(columns="run"))
    assert res.estimate == pytest.approx(separate.estimate, abs=1e-10)  # balanced: mean diff
    assert res.std_error == pytest.approx(np.sqrt(2 * res.sd_residual**2 / 36), rel=1e-3)
    assert res.std_error < separate.std_error / 2
