"""Normalised surface Dice (NSD) at a tolerance in mm, as MONAI's `compute_surface_dice(
class_thresholds=[tolerance], spacing=..., use_subvoxels=False)` defines it.

Definition, for binary masks P (prediction) and L (label) of one class, with the surfaces and
directed surface distances of `hd95` (surface = mask XOR its 6-connected erosion, voxels outside
the image counted as background; Euclidean distances in mm with the voxel spacing):

    NSD = (|{p in S(P): d(p, S(L)) <= tol}| + |{l in S(L): d(l, S(P)) <= tol}|)
          / (|S(P)| + |S(L)|)

Empty masks, exactly as MONAI:
- both P and L empty: no surface at all, NSD = NaN (kept, and counted by the summaries);
- only one empty: the other's surface voxels are at infinite distance from an empty surface, so
  none is within the tolerance and NSD = 0.0 (the `pred_empty` / `label_empty` columns of the
  per-case rows say which).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from diffseg3d.core.metrics.hd95 import directed_surface_distances
from diffseg3d.core.metrics.inputs import check_pair, check_spacing
from scipy import ndimage

#: Default NSD tolerance in mm (the issue's and nnU-Net/MONAI tables' common choice).
DEFAULT_TOLERANCE_MM = 2.0


def check_tolerance(tolerance_mm: float) -> float:
    """Returns the tolerance as a float, or raises if it is negative or not finite."""
    value = float(tolerance_mm)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"NSD tolerance must be a finite number of mm >= 0, got {tolerance_mm}.")
    return value


def nsd_binary(
    pred_mask: np.ndarray,
    label_mask: np.ndarray,
    spacing: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> float:
    """NSD of two boolean masks of the same shape (*spatial); NaN if both are empty, 0 if one is."""
    tolerance_mm = check_tolerance(tolerance_mm)
    pred_mask = np.asarray(pred_mask, dtype=bool)
    label_mask = np.asarray(label_mask, dtype=bool)
    pred_any, label_any = pred_mask.any(), label_mask.any()
    if not pred_any and not label_any:
        return float("nan")
    if not pred_any or not label_any:
        return 0.0
    # Cropping to the box of P | L keeps every surface and distance (see hd95's module note).
    box = ndimage.find_objects((pred_mask | label_mask).astype(np.int8))[0]
    pred_mask, label_mask = pred_mask[box], label_mask[box]
    forward = directed_surface_distances(pred_mask, label_mask, spacing)
    backward = directed_surface_distances(label_mask, pred_mask, spacing)
    within = np.count_nonzero(forward <= tolerance_mm) + np.count_nonzero(backward <= tolerance_mm)
    return float(within / (forward.size + backward.size))


def nsd_per_class(
    pred: np.ndarray,
    label: np.ndarray,
    num_classes: int,
    spacing: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> np.ndarray:
    """NSD at `tolerance_mm` for each foreground class c = 1..C-1 of one case.

    Args:
        pred: (*spatial) int predicted label map.
        label: (*spatial) int ground-truth label map.
        num_classes: C, including background.
        spacing: voxel size in mm, one value per spatial axis.
        tolerance_mm: a surface voxel within this distance (inclusive) of the other surface counts.

    Returns:
        (C - 1,) float64 in [0, 1]; NaN where class c is empty in both maps, 0 where it is empty
        in exactly one.
    """
    pred, label = check_pair(pred, label, num_classes)
    spacing = check_spacing(spacing, label.ndim)
    tolerance_mm = check_tolerance(tolerance_mm)
    return np.array(
        [nsd_binary(pred == c, label == c, spacing, tolerance_mm) for c in range(1, num_classes)],
        dtype=np.float64,
    )

