"""Linear mixed model of one comparison with seeds (`statsmodels` MixedLM, REML).

    score[i, s, r] = beta0 + beta * [setting r is b] + u_case[i] + v_seed[r, s] + e[i, s, r]
    u_case ~ N(0, sd_case^2),  v_seed ~ N(0, sd_seed^2),  e ~ N(0, sd_residual^2)

i: test case, s: seed, r: setting (a = reference, b = compared). The random intercept per case
carries what a case does to every run (its difficulty); the variance component per seed has one
level per training run, so it carries what training noise does to all cases of a run. Runs are
told apart by their run id (`run` column): each seed of each setting is its own trained model,
except where two settings are the same trained run scored two ways (Table 4's samplers), which
then share the level, and the run's effect cancels in their difference. Case and run
effects are crossed (every run scores every case): statsmodels fits crossed effects as variance
components of one group spanning all rows (`groups` constant, `re_formula="0"`,
`vc_formula={"case": "0 + C(case)", "seed": "0 + C(run)"}`).

beta is the setting effect; its p is statsmodels' Wald z test. With one seed per setting the
seed component is not identified (it is indistinguishable from the residual): no model is fitted
and the reason is returned instead. With few runs (2 or 3 seeds: 4-6 levels) sd_seed is poorly
estimated and the Wald p optimistic; the model still separates training noise from case spread,
which the t-test on seed-averaged cases does not. Measured on 100 simulated studies (20 cases, 3
seeds per setting, SD 0.05 between cases, 0.01 between seeds, 0.02 residual): the 99% Wald
interval covers the true effect in 95%, the case bootstrap (`bootstrap`) in 69% of studies.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

#: Columns of the long frame `mixed_model_test` takes (and optionally `run`, the run id).
LONG_COLUMNS: tuple[str, ...] = ("case", "seed", "setting", "score")
FORMULA = "score ~ is_b"
VC_FORMULA = {"case": "0 + C(case)", "seed": "0 + C(run)"}
#: Optimisers tried in turn until one converges (L-BFGS alone misses about 1 study in 30 of
#: tests/analysis/stats/test_simulation.py's; Powell then converges).
FIT_METHODS: tuple[str, ...] = ("lbfgs", "powell")


@dataclasses.dataclass(frozen=True)
class MixedResult:
    """Setting effect (b - a) with its standard error and two-sided Wald p, the estimated
    standard deviations of the case, seed (training run) and residual terms, and whether the
    optimiser converged. NaN throughout with `note` saying why when no model was fitted."""

    estimate: float
    std_error: float
    pvalue: float
    sd_case: float
    sd_seed: float
    sd_residual: float
    n_seeds: int
    n_obs: int
    converged: bool
    note: str = ""


def _empty(n_seeds: int, n_obs: int, note: str) -> MixedResult:
    nan = math.nan
    return MixedResult(nan, nan, nan, nan, nan, nan, n_seeds, n_obs, False, note)


def design_frame(long: pd.DataFrame) -> pd.DataFrame:
    """`long` (columns `LONG_COLUMNS`; setting "a" or "b"; optional `run`) with the model's
    columns: `is_b` (0/1), `run` (the given run id, else setting and seed) and `group` (one
    group for all rows)."""
    missing = [c for c in LONG_COLUMNS if c not in long.columns]
    if missing:
        raise ValueError(f"mixed model data lacks columns {missing}")
    bad = sorted(set(long["setting"]) - {"a", "b"})
    if bad:
        raise ValueError(f"mixed model settings must be 'a' or 'b', got {bad}")
    has_run = "run" in long.columns
    frame = long.loc[:, list(LONG_COLUMNS) + (["run"] if has_run else [])]
    frame = frame.dropna(subset=["score"]).copy()
    frame["is_b"] = (frame["setting"] == "b").astype(float)
    if not has_run:
        frame["run"] = frame["setting"] + "-" + frame["seed"].astype(str)
    frame["run"] = frame["run"].astype(str)
    frame["group"] = 0
    return frame.reset_index(drop=True)


def mixed_model_test(long: pd.DataFrame) -> MixedResult:
    """Fit the model of the module docstring to one comparison.

    long: one row per (case, seed, setting) with the per-case score of that run (class mean);
    setting "a" (reference) or "b" (compared); the cases should be the ones both settings have.
    """
    frame = design_frame(long)
    seeds = frame.groupby("setting")["seed"].nunique()
    n_seeds = int(seeds.min()) if len(seeds) == 2 else 0
    if len(seeds) < 2:
        return _empty(n_seeds, len(frame), "only one setting has scores")
    if n_seeds < 2:
        return _empty(n_seeds, len(frame), "one seed per setting: training noise cannot be "
                      "told from case-level noise (run the grid with two or more seeds)")
    if frame["case"].nunique() < 2:
        return _empty(n_seeds, len(frame), "fewer than 2 cases")
    model = smf.mixedlm(FORMULA, frame, groups="group", re_formula="0", vc_formula=VC_FORMULA)
    try:
        with warnings.catch_warnings():
            # Boundary estimates (a variance of 0) warn; `converged` and the SDs say it.
            warnings.simplefilter("ignore")
            fit = model.fit(reml=True, method=list(FIT_METHODS))
    except (np.linalg.LinAlgError, ValueError) as err:
        return _empty(n_seeds, len(frame), f"the mixed model could not be fitted: {err}")
    vcomp = dict(zip(model.exog_vc.names, np.asarray(fit.vcomp, dtype=float), strict=True))
    return MixedResult(
        estimate=float(fit.fe_params["is_b"]), std_error=float(fit.bse_fe["is_b"]),
        pvalue=float(fit.pvalues["is_b"]) if fit.converged else math.nan,
        sd_case=math.sqrt(max(vcomp["case"], 0.0)),
        sd_seed=math.sqrt(max(vcomp["seed"], 0.0)), sd_residual=math.sqrt(float(fit.scale)),
        n_seeds=n_seeds, n_obs=len(frame), converged=bool(fit.converged),
        note="" if fit.converged else "the optimiser did not converge: p not reported",
    )
