"""Binary Dice score per foreground class of one case (design card, Metrics)."""

from __future__ import annotations

import numpy as np
from diffseg3d.core.metrics.inputs import check_pair


def dice_per_class(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice 2 |P & L| / (|P| + |L|) for each foreground class c = 1..C-1.

    Args:
        pred: (*spatial) int predicted label map.
        label: (*spatial) int ground-truth label map.
        num_classes: C, including background.

    Returns:
        (C - 1,) float64; NaN where class c is absent from both maps (excluded from means and
        counted by `evaluate.summarise`), 0 where it is absent from exactly one.
    """
    pred, label = check_pair(pred, label, num_classes)
    scores = np.full(num_classes - 1, np.nan)
    for c in range(1, num_classes):
        p, y = pred == c, label == c
        total = int(p.sum()) + int(y.sum())
        if total:
            scores[c - 1] = 2.0 * int(np.logical_and(p, y).sum()) / total
    return scores
