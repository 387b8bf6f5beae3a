"""Paired tests between two settings (paper section 4: paired Student's t-test, alpha = 0.01).

Everything here calls scipy / statsmodels; nothing they provide is re-implemented:
- `scipy.stats.ttest_rel` for the t-test and the confidence interval of the mean paired
  difference (its `confidence_interval`, from the t distribution of the differences);
- `scipy.stats.wilcoxon` as the robustness column;
- `statsmodels.stats.multitest.multipletests(method="holm")` across one table's comparisons.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
from diffseg3d.analysis.stats import ALPHA
from scipy import stats
from statsmodels.stats.multitest import multipletests


@dataclasses.dataclass(frozen=True)
class PairedTest:
    """Result of comparing b against reference a on n paired cases.

    mean_diff, ci_low, ci_high: mean of (b - a) and its `confidence` (1 - alpha) interval.
    t_pvalue / wilcoxon_pvalue: two-sided, unadjusted; NaN when n < 2 (or all differences 0
    for Wilcoxon). Holm-adjusted values come from `holm`.
    """

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    ci_low: float
    ci_high: float
    confidence: float
    t_statistic: float
    t_pvalue: float
    wilcoxon_statistic: float
    wilcoxon_pvalue: float


def paired_test(a: np.ndarray, b: np.ndarray, alpha: float = ALPHA) -> PairedTest:
    """Paired t-test, Wilcoxon signed-rank and (1 - alpha) CI of mean(b - a).

    a, b: (n,) per-case scores on the same cases, in the same order.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need equal 1-D shapes, got {a.shape} and {b.shape}")
    n, nan = len(a), math.nan
    if n < 2:
        mean_a = float(a.mean()) if n else nan
        mean_b = float(b.mean()) if n else nan
        return PairedTest(n, mean_a, mean_b, mean_b - mean_a, nan, nan, 1 - alpha,
                          nan, nan, nan, nan)
    with warnings.catch_warnings():
        # Identical samples give a 0/0 t statistic; scipy warns and returns NaN, which we keep.
        warnings.simplefilter("ignore", RuntimeWarning)
        t = stats.ttest_rel(b, a)
        ci = t.confidence_interval(confidence_level=1 - alpha)
    diff = b - a
    if np.all(diff == 0):
        w_stat, w_p = nan, nan
    else:
        w = stats.wilcoxon(b, a)
        w_stat, w_p = float(w.statistic), float(w.pvalue)
    return PairedTest(
        n=n, mean_a=float(a.mean()), mean_b=float(b.mean()), mean_diff=float(diff.mean()),
        ci_low=float(ci.low), ci_high=float(ci.high), confidence=1 - alpha,
        t_statistic=float(t.statistic), t_pvalue=float(t.pvalue),
        wilcoxon_statistic=w_stat, wilcoxon_pvalue=w_p,
    )


def holm(pvalues: list[float] | np.ndarray) -> np.ndarray:
    """Holm-adjusted p-values across one table's comparisons; NaN entries stay NaN (n,)."""
    p = np.asarray(pvalues, dtype=float)
    adjusted = np.full_like(p, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        adjusted[finite] = multipletests(p[finite], method="holm")[1]
    return adjusted


def format_pvalue(p: float) -> str:
    """`<0.001`, else three decimals; `n/a` for NaN (too few pairs)."""
    if not np.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"
