"""Quality of a set of N segmentation samples of one case against its one reference mask.

Per foreground class c (binary masks S_i = samples[i] == c, Y = label == c):

- sample Dice: Dice(S_i, Y) of every sample, and its spread over the samples (ddof 0 std: the
  samples are the whole set drawn, not a sample of a larger one);
- diversity: the mean over distinct pairs i < j of d(S_i, S_j);
- generalised energy distance (Kohl et al. 2018, with one reference mask):
      D^2_GED = 2 E[d(S, Y)] - E[d(S, S')],   d(A, B) = 1 - IoU(A, B) = 1 - |A & B| / |A | B|,
  estimated with E[d(S, Y)] = mean_i d(S_i, Y) and E[d(S, S')] = the diversity (mean over
  i != j, the unbiased estimate for independent S, S'; Kohl et al.'s code also averages the
  i = j terms, which are 0, so its second term is (N - 1) / N of this one).

Empty masks: d(A, B) = 0 when A and B are both empty (they agree), 1 when exactly one is (IoU 0);
so a class absent from the reference and from every sample has GED 0 and diversity 0, while its
sample Dice is NaN (both empty, as `dice.dice_per_class`) and is left out of the spread.
A class a sample never predicts has Dice 0 and d = 1 against a non-empty reference.

Everything is counted from one confusion matrix per pair of label maps (`np.bincount`), so the
cost is one pass over the voxels per pair, with no loop over voxels or classes.
"""

from __future__ import annotations

import itertools

import numpy as np
from diffseg3d.core.metrics.inputs import check_label_map

__all__ = ["SAMPLE_SET_KEYS", "iou_distance", "pairwise_overlaps", "sample_dice",
           "sample_set_metrics"]

#: Keys of `sample_set_metrics`, each a (C - 1,) array over the foreground classes.
SAMPLE_SET_KEYS: tuple[str, ...] = ("sample_dice_mean", "sample_dice_std", "diversity", "ged")


def pairwise_overlaps(a: np.ndarray, b: np.ndarray, num_classes: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(|A_c & B_c|, |A_c|, |B_c|) for every class c = 0..C-1 of two label maps of one shape.

    a, b: (*spatial) int label maps in [0, C). Returns three (C,) int64 arrays.
    """
    confusion = np.bincount((a.astype(np.int64) * num_classes + b).ravel(),
                            minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return np.diagonal(confusion).copy(), confusion.sum(axis=1), confusion.sum(axis=0)


def iou_distance(a: np.ndarray, b: np.ndarray, num_classes: int) -> np.ndarray:
    """d = 1 - IoU per foreground class c = 1..C-1 of two label maps: (C - 1,) float64 in [0, 1];
    0 when class c is absent from both maps (see the module docstring)."""
    inter, size_a, size_b = pairwise_overlaps(a, b, num_classes)
    union = (size_a + size_b - inter)[1:]
    iou = np.where(union > 0, inter[1:] / np.maximum(union, 1), 1.0)
    return 1.0 - iou


def sample_dice(samples: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of each sample per foreground class: samples (N, *spatial), label (*spatial) ->
    (N, C - 1) float64; NaN where the class is absent from both the sample and the label, 0 where
    it is absent from one (the convention of `dice.dice_per_class`)."""
    samples, label = _checked(samples, label, num_classes)
    out = np.empty((len(samples), num_classes - 1))
    for i, sample in enumerate(samples):  # N label maps, each one bincount over the voxels
        inter, size_s, size_y = pairwise_overlaps(sample, label, num_classes)
        total = (size_s + size_y)[1:]
        out[i] = np.where(total > 0, 2.0 * inter[1:] / np.maximum(total, 1), np.nan)
    return out


def sample_set_metrics(samples: np.ndarray, label: np.ndarray, num_classes: int
                       ) -> dict[str, np.ndarray]:
    """Sample Dice mean and spread, diversity and GED per foreground class of one case.

    Args:
        samples: (N, *spatial) int label maps of N >= 2 samples (e.g. the argmax of each
            diffusion sample's final x0_hat).
        label: (*spatial) int reference label map.
        num_classes: C, background included.

    Returns:
        `SAMPLE_SET_KEYS` -> (C - 1,) float64: `sample_dice_mean` and `sample_dice_std` (ddof 0)
        over the samples with a defined Dice (NaN when none), `diversity` (mean over i < j of
        1 - IoU(S_i, S_j)) and `ged` (2 mean_i d(S_i, Y) - diversity).
    """
    samples, label = _checked(samples, label, num_classes)
    if len(samples) < 2:
        raise ValueError(f"a sample set needs N >= 2 samples, got {len(samples)}")
    dice = sample_dice(samples, label, num_classes)
    defined = np.isfinite(dice).any(axis=0)
    safe = np.where(np.isfinite(dice), dice, 0.0)
    n = np.isfinite(dice).sum(axis=0)
    mean = np.where(defined, safe.sum(axis=0) / np.maximum(n, 1), np.nan)
    var = np.where(defined, (np.where(np.isfinite(dice), dice - mean, 0.0) ** 2).sum(axis=0)
                   / np.maximum(n, 1), np.nan)
    to_label = np.stack([iou_distance(s, label, num_classes) for s in samples]).mean(axis=0)
    between = np.stack([iou_distance(samples[i], samples[j], num_classes)
                        for i, j in itertools.combinations(range(len(samples)), 2)]).mean(axis=0)
    return {"sample_dice_mean": mean, "sample_dice_std": np.sqrt(var), "diversity": between,
            "ged": 2.0 * to_label - between}


def _checked(samples: np.ndarray, label: np.ndarray, num_classes: int
             ) -> tuple[np.ndarray, np.ndarray]:
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + 1), got {num_classes}.")
    samples = check_label_map("samples", samples, num_classes)
    label = check_label_map("label", label, num_classes)
    if samples.ndim != label.ndim + 1 or samples.shape[1:] != label.shape:
        raise ValueError(f"samples {samples.shape} must be (N, *{label.shape}) of the label")
    return samples, label
