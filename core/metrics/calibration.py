"""Calibration of voxel class probabilities: expected calibration error and reliability bins.

For each voxel v with class probabilities p_v (a diffusion ensemble's mean sample probabilities,
`core.infer.ensemble.ensemble_probabilities`, or a U-Net's softmax) the prediction is
argmax_c p_v[c] and its confidence conf_v = max_c p_v[c]. The confidences fall into B
equal-width bins on [0, 1] (bin b holds (b / B, (b + 1) / B], bin 0 also holds 0; Guo et al.
2017, B = 15). Per bin: n_b voxels, their mean confidence conf_b and their accuracy acc_b (the
fraction whose prediction equals the reference class). Then

    ECE = sum_b (n_b / n) |acc_b - conf_b|        (empty bins contribute 0)

`reliability_bins` returns sums, not means, so bins of several cases can be added before
`expected_calibration_error` (the split's pooled reliability diagram), and a `region` mask
restricts the voxels counted (`error_detection.evaluation_region`: without it a volume's
background far from any organ, predicted with confidence near 1 and right, dominates n).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["N_BINS", "bin_edges", "expected_calibration_error", "reliability_bins"]

#: Equal-width confidence bins (Guo et al. 2017).
N_BINS = 15


def bin_edges(n_bins: int = N_BINS) -> np.ndarray:
    """(n_bins + 1,) edges 0, 1/B, ..., 1."""
    return np.linspace(0.0, 1.0, n_bins + 1)


def reliability_bins(probs: np.ndarray, label: np.ndarray, region: np.ndarray | None = None,
                     n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per-bin counts and sums of one case.

    Args:
        probs: (*spatial, C) class probabilities per voxel (each row summing to 1).
        label: (*spatial) int reference label map.
        region: (*spatial) bool voxels to count, or None for all.
        n_bins: B.

    Returns:
        `count` (B,) int64 voxels per bin, `confidence` (B,) float64 sum of their confidences,
        `correct` (B,) float64 number of them predicted right.
    """
    probs = np.asarray(probs, dtype=np.float64)
    label = np.asarray(label)
    if probs.shape[:-1] != label.shape:
        raise ValueError(f"probs {probs.shape} must be (*{label.shape}, classes)")
    keep = np.ones(label.shape, bool) if region is None else np.asarray(region, bool)
    if keep.shape != label.shape:
        raise ValueError(f"region {keep.shape} must have the label's shape {label.shape}")
    p = probs[keep]
    conf = p.max(axis=-1)
    correct = (p.argmax(axis=-1) == label[keep]).astype(np.float64)
    # ceil(conf * B) - 1 puts conf in (b / B, (b + 1) / B]; clip sends conf = 0 to bin 0.
    index = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    return {"count": np.bincount(index, minlength=n_bins),
            "confidence": np.bincount(index, weights=conf, minlength=n_bins),
            "correct": np.bincount(index, weights=correct, minlength=n_bins)}


def expected_calibration_error(bins: dict[str, np.ndarray]) -> float:
    """ECE of `reliability_bins` output (or its sum over cases); NaN when no voxel was counted."""
    count = np.asarray(bins["count"], dtype=np.float64)
    total = count.sum()
    if total == 0:
        return math.nan
    gap = np.abs(np.asarray(bins["correct"]) - np.asarray(bins["confidence"]))  # n_b |acc - conf|
    return float(gap.sum() / total)
