"""The trial's per-case PNG (`predictions/<case>.png`): image, ground truth and prediction on a
few slices, drawn by the shared renderer `core.viz.montage` (same colours and orientation as the
paper figure of `analysis.figures`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from diffseg3d.core.viz.montage import montage_figure, save_figure

#: Montage rows: evenly spaced slices along the last (through-plane) axis.
DEFAULT_NUM_SLICES = 4


def pick_slices(label: np.ndarray, num_slices: int) -> list[int]:
    """Indices along the last axis: evenly spaced over the slices that hold foreground (all
    slices when the label is empty), so the montage shows anatomy rather than empty ends."""
    depth = label.shape[-1]
    occupied = np.flatnonzero(label.reshape(-1, depth).any(axis=0))
    lo, hi = (int(occupied[0]), int(occupied[-1])) if occupied.size else (0, depth - 1)
    count = min(num_slices, hi - lo + 1)
    return sorted({int(round(x)) for x in np.linspace(lo, hi, count)})


def save_montage(
    image: np.ndarray,
    label: np.ndarray,
    pred: np.ndarray,
    path: str | os.PathLike,
    class_names: Sequence[str],
    *,
    num_slices: int = DEFAULT_NUM_SLICES,
    title: str | None = None,
) -> Path:
    """Write a PNG grid: one row per slice, columns image | label overlay | prediction overlay.

    Args:
      image: (X, Y, Z) float intensities.
      label, pred: (X, Y, Z) int label maps, 0 = background, i + 1 = `class_names[i]`.
      path: output PNG.
      class_names: foreground names (legend).
      num_slices: rows (slices along Z, `pick_slices`).
      title: figure title (e.g. the case id and its mean Dice).
    """
    image, label, pred = np.asarray(image), np.asarray(label), np.asarray(pred)
    if not (image.shape == label.shape == pred.shape) or image.ndim != 3:
        raise ValueError(
            f"save_montage needs three (X, Y, Z) arrays of one shape, got image {image.shape}, "
            f"label {label.shape}, prediction {pred.shape}"
        )
    fig = montage_figure(image, [("label", label), ("prediction", pred)], class_names,
                         pick_slices(label, num_slices), title=title or "")
    return save_figure(fig, path)
