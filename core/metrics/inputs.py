"""Validation of the label maps and spacings the metrics receive (NumPy, outside jit).

Metric functions take one case at a time: `pred` and `label` are integer label maps of the same
shape (*spatial), values in [0, num_classes), 0 = background; `spacing` is the voxel size in mm,
one positive number per spatial axis.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_label_map(name: str, values: np.ndarray, num_classes: int) -> np.ndarray:
    """Returns `values` as an int64 array, or raises naming `name` if it is not a label map."""
    array = np.asarray(values)
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"{name} must hold integer class indices, got non-integer floats.")
    elif array.dtype.kind not in "iub":
        raise ValueError(f"{name} must be an integer label map, got dtype {array.dtype}.")
    array = array.astype(np.int64)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(
            f"{name} has labels outside [0, {num_classes}): min {array.min()}, max {array.max()}."
        )
    return array


def check_pair(
    pred: np.ndarray, label: np.ndarray, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validates a (prediction, ground truth) pair of label maps of one case."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background + 1), got {num_classes}.")
    pred = check_label_map("pred", pred, num_classes)
    label = check_label_map("label", label, num_classes)
    if pred.shape != label.shape:
        raise ValueError(f"pred shape {pred.shape} != label shape {label.shape}.")
    return pred, label


def check_spacing(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    """Returns the spacing as a tuple of floats, one positive value per spatial axis."""
    values = tuple(float(s) for s in np.ravel(np.asarray(spacing, dtype=np.float64)))
    if len(values) != ndim:
        raise ValueError(f"spacing {tuple(spacing)} has {len(values)} values; need {ndim}.")
    if not all(np.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be positive and finite, got {values}.")
    return values
