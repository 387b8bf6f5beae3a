"""ROI size vs Dice: Spearman correlation per data set and setting (paper section 5, Limitation).

Per class: ROI size = mean ground-truth volume (mm^3) over the test cases; Dice = mean over runs
and cases (NaN skipped). With so few classes (8 prostate, 15 AMOS) the asymptotic p of
`scipy.stats.spearmanr` is unreliable, so a permutation p-value from
`scipy.stats.permutation_test` is reported next to it: exact enumeration of all n! pairings when
n <= 8, otherwise `n_resamples` random pairings from a fixed seed.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy import stats

EXACT_MAX_CLASSES = 8  # 8! = 40,320 pairings: cheap to enumerate with a vectorised statistic


@dataclasses.dataclass(frozen=True)
class SpearmanResult:
    """n: classes; r: Spearman's rho; p: scipy's asymptotic two-sided p; p_perm: permutation."""

    n: int
    r: float
    p: float
    p_perm: float
    exact: bool


def _rank_correlation(fixed_ranks: np.ndarray):
    """Vectorised statistic for permutation_test: Pearson r of (permuted ranks, fixed ranks)."""
    fixed = fixed_ranks - fixed_ranks.mean()

    def statistic(ranks: np.ndarray, axis: int = -1) -> np.ndarray:
        ranks = np.moveaxis(ranks, axis, -1)
        centred = ranks - ranks.mean(axis=-1, keepdims=True)
        denom = np.sqrt((centred**2).sum(-1) * (fixed**2).sum())
        return (centred * fixed).sum(-1) / denom

    return statistic


def spearman_with_permutation(x: np.ndarray, y: np.ndarray, *, n_resamples: int = 9999,
                              seed: int = 0) -> SpearmanResult:
    """Spearman rho of (x, y) (n,) with asymptotic and permutation two-sided p-values."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return SpearmanResult(n, math.nan, math.nan, math.nan, False)
    res = stats.spearmanr(x, y)
    exact = n <= EXACT_MAX_CLASSES
    # Spearman's rho is Pearson's r on ranks, and permuting y permutes its ranks.
    perm = stats.permutation_test(
        (stats.rankdata(y),), _rank_correlation(stats.rankdata(x)),
        permutation_type="pairings", vectorized=True, alternative="two-sided",
        n_resamples=np.inf if exact else n_resamples, rng=np.random.default_rng(seed),
    )
    return SpearmanResult(n, float(res.statistic), float(res.pvalue), float(perm.pvalue), exact)


def roi_dice_per_class(rows: pd.DataFrame) -> pd.DataFrame:
    """One setting's per-class table: index class, columns `roi_mm3, roi_voxels, dice`."""
    return rows.groupby("class", sort=True)[["roi_mm3", "roi_voxels", "dice"]].mean()


def roi_dice_spearman(frame: pd.DataFrame, *, n_resamples: int = 9999,
                      seed: int = 0) -> pd.DataFrame:
    """Spearman per (data set, setting) over classes.

    frame: tidy rows with a `setting` column. Returns columns
    `data_set, setting, n_classes, r, p, p_perm, exact`.
    """
    out = []
    for (data_set, setting), rows in frame.groupby(["data_set", "setting"], sort=True):
        per_class = roi_dice_per_class(rows).dropna()
        res = spearman_with_permutation(per_class["roi_mm3"], per_class["dice"],
                                        n_resamples=n_resamples, seed=seed)
        out.append({"data_set": data_set, "setting": setting, "n_classes": res.n, "r": res.r,
                    "p": res.p, "p_perm": res.p_perm, "exact": res.exact})
    return pd.DataFrame(out, columns=["data_set", "setting", "n_classes", "r", "p", "p_perm",
                                      "exact"])
