"""Is a sampling ensemble's uncertainty informative? The Spearman correlation between each
case's mean voxel entropy (`core.infer.ensemble.entropy_map`) and its mean Dice.

A useful uncertainty is high where the segmentation is poor, so a clearly negative r says that
the entropy flags the bad cases; r near 0 says it does not.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def uncertainty_dice_spearman(case_entropy: np.ndarray, case_dice: np.ndarray) -> float:
    """Spearman r between per-case mean entropy and per-case Dice.

    Args:
        case_entropy: (cases,) mean voxel entropy of each case's ensemble (nats).
        case_dice: (cases,) each case's mean foreground Dice (NaN for a case with no class in
            either map).

    Returns:
        scipy's Spearman r over the cases with a finite Dice; NaN with fewer than 3 such cases or
        when either side is constant (no ranking to correlate).
    """
    entropy = np.asarray(case_entropy, dtype=np.float64)
    dice = np.asarray(case_dice, dtype=np.float64)
    if entropy.shape != dice.shape or entropy.ndim != 1:
        raise ValueError(
            f"case_entropy {entropy.shape} and case_dice {dice.shape} must be the same (cases,)"
        )
    keep = np.isfinite(entropy) & np.isfinite(dice)
    entropy, dice = entropy[keep], dice[keep]
    if entropy.size < 3 or np.ptp(entropy) == 0 or np.ptp(dice) == 0:
        return math.nan
    return float(stats.spearmanr(entropy, dice).statistic)
