"""Error detection by voxel uncertainty: does the uncertainty mark the voxels the model gets
wrong? AUROC and average precision (AP) of an uncertainty map as the score for predicting the
error voxels (prediction != reference), inside a stated region.

Region (`evaluation_region`): the union of the predicted and the reference foreground, dilated by
`EVALUATION_MARGIN` voxels with the 3x3x3 (26-connected) structuring element. Background far from
any organ is left out: it is almost always right and certain and would make any uncertainty look
good. A case with no foreground in either map has an empty region and NaN scores.

AUROC = P(score of a random error voxel > that of a random correct voxel) + 0.5 P(equal): the
Mann-Whitney U statistic from average ranks, so ties count half (as scikit-learn's
`roc_auc_score`). AP = sum_n (R_n - R_{n-1}) P_n over the distinct score thresholds in
decreasing order, R_n and P_n the recall and precision of "score >= threshold n" (scikit-learn's
`average_precision_score`, no interpolation). Both are NaN when the region has no error voxel
or no correct voxel (AP: no error voxel).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage, stats

__all__ = ["EVALUATION_MARGIN", "auroc", "average_precision", "error_detection",
           "evaluation_region"]

#: Voxels the foreground union is dilated by to form the evaluation region.
EVALUATION_MARGIN = 2


def evaluation_region(pred: np.ndarray, label: np.ndarray,
                      margin: int = EVALUATION_MARGIN) -> np.ndarray:
    """(*spatial) bool: (pred > 0 | label > 0) dilated `margin` times by the full 3^d cube."""
    foreground = (np.asarray(pred) > 0) | (np.asarray(label) > 0)
    if margin == 0 or not foreground.any():
        return foreground
    structure = ndimage.generate_binary_structure(foreground.ndim, foreground.ndim)
    return ndimage.binary_dilation(foreground, structure=structure, iterations=margin)


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the bool `positives` (same shape, any)."""
    s, y = np.ravel(scores).astype(np.float64), np.ravel(positives).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = stats.rankdata(s)  # average ranks: ties count half
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float:
    """Average precision (step-wise area under precision-recall) of `scores` for `positives`."""
    s, y = np.ravel(scores).astype(np.float64), np.ravel(positives).astype(bool)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score
    tp = np.cumsum(y)[last]
    precision = tp / (last + 1)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def error_detection(uncertainty: np.ndarray, pred: np.ndarray, label: np.ndarray,
                    region: np.ndarray) -> dict[str, float]:
    """AUROC and AP of `uncertainty` for the error voxels of `pred` inside `region`.

    Args:
        uncertainty: (*spatial) float, higher = less certain (entropy, disagreement).
        pred, label: (*spatial) int predicted and reference label maps.
        region: (*spatial) bool voxels scored (`evaluation_region`).

    Returns: `auroc`, `ap`, `region_voxels`, `error_voxels` (the last two as floats).
    """
    region = np.asarray(region, bool)
    wrong = (np.asarray(pred) != np.asarray(label))[region]
    score = np.asarray(uncertainty)[region]
    return {"auroc": auroc(score, wrong), "ap": average_precision(score, wrong),
            "region_voxels": float(region.sum()), "error_voxels": float(wrong.sum())}
