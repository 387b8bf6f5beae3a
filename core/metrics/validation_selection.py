"""Best-validation selection: the validation score and the rule that says whether a validation
beats the best so far (`eval.val_metric`, `eval.val_ties`).

Two scores (`VAL_METRICS`), both from label maps (cases, *spatial):

- "foreground_dice" (this project's default): `evaluate.mean_case_dice`, the mean over cases of
  each case's mean binary Dice over the foreground classes present in either map.
- "binary_dice_with_background" (the released code): ImgX-DiffSeg v0.1.0 selects the test
  checkpoint by `mean_binary_dice_score` (`imgx/run_test.py:109-113`), which per case is the
  NaN-skipping mean over ALL classes, background included, of the binary Dice of the one-hot
  masks, NaN where a class is in neither map (`imgx/metric/dice.py:5-25`,
  `imgx/exp/eval.py:56-63`), then the mean over the cases of the split
  (`imgx/exp/eval.py:475`). The background's Dice (close to 1) is one of the C terms, so the
  score is higher than the foreground mean and moves less.

Ties (`VAL_TIES`): "earlier" keeps the first of equal scores (this project's default);
"later" takes the later one, as the released selection intends ("if same performance, prefer
being trained for longer", `imgx/run_test.py:55-63`, `best <= metric`; there the checkpoints
are visited in `Path.glob` order, which is the file system's, so "later" is the step order only
where that order is). A NaN score never wins under either rule.
"""

from __future__ import annotations

import math

import numpy as np
from diffseg3d.core.metrics.evaluate import mean_case_dice
from diffseg3d.core.metrics.inputs import check_pair

VAL_METRICS = ("foreground_dice", "binary_dice_with_background")
VAL_TIES = ("earlier", "later")


def binary_dice_with_background(
    pred: np.ndarray, label: np.ndarray, num_classes: int
) -> np.ndarray:
    """(C,) float64 binary Dice 2 |P & L| / (|P| + |L|) of every class c = 0..C-1 of one case,
    background included; NaN where c is in neither map. pred, label: (*spatial) int."""
    pred, label = check_pair(pred, label, num_classes)
    scores = np.full(num_classes, np.nan)
    for c in range(num_classes):
        p, y = pred == c, label == c
        total = int(p.sum()) + int(y.sum())
        if total:
            scores[c] = 2.0 * int(np.logical_and(p, y).sum()) / total
    return scores


def mean_binary_dice_score(preds: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """The released `mean_binary_dice_score`: mean over cases of the NaN-skipping mean of
    `binary_dice_with_background`. preds, labels: (cases, *spatial) int. NaN for no case."""
    per_case = [float(np.nanmean(binary_dice_with_background(p, y, num_classes)))
                for p, y in zip(preds, labels, strict=True)]
    return float(np.mean(per_case)) if per_case else math.nan


def validation_score(metric: str, preds: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """The validation score `metric` (one of `VAL_METRICS`; ValueError naming it otherwise)."""
    if metric == "foreground_dice":
        return float(mean_case_dice(preds, labels, num_classes))
    if metric == "binary_dice_with_background":
        return mean_binary_dice_score(preds, labels, num_classes)
    raise ValueError(f"eval.val_metric must be one of {VAL_METRICS}, got {metric!r}")


def beats_best(score: float, best: float | None, ties: str) -> bool:
    """Whether a validation `score` replaces the `best` so far (None: no best yet): strictly
    higher for "earlier", higher or equal for "later" (`VAL_TIES`); NaN never wins."""
    if ties not in VAL_TIES:
        raise ValueError(f"eval.val_ties must be one of {VAL_TIES}, got {ties!r}")
    if math.isnan(score):
        return False
    if best is None or math.isnan(best):
        return True
    return score >= best if ties == "later" else score > best
