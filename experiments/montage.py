"""PNG slice montage of one case: image, ground truth and prediction, for a quick visual check
(the trial's `predictions/<case>.png` artifact, like the paper's Fig. 2)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Montage rows: evenly spaced slices along the last (through-plane) axis.
DEFAULT_NUM_SLICES = 4


def class_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 4) RGBA; background (label 0) transparent, classes from `tab10`/`tab20`."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if num_classes <= 11 else "tab20"]
    colours = np.array([cmap(i % cmap.N) for i in range(max(num_classes - 1, 0))])
    return np.concatenate([np.zeros((1, 4)), colours.reshape(-1, 4)], axis=0)


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
      num_slices: rows (slices along Z).
      title: figure title (e.g. the case id and its mean Dice).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    image, label, pred = np.asarray(image), np.asarray(label), np.asarray(pred)
    if not (image.shape == label.shape == pred.shape) or image.ndim != 3:
        raise ValueError(
            f"save_montage needs three (X, Y, Z) arrays of one shape, got image {image.shape}, "
            f"label {label.shape}, prediction {pred.shape}"
        )
    num_classes = len(class_names) + 1
    colours = class_colours(num_classes)
    cmap = ListedColormap(colours)
    slices = pick_slices(label, num_slices)
    fig, axes = plt.subplots(
        len(slices), 3, figsize=(7.5, 2.5 * len(slices)), squeeze=False, constrained_layout=True
    )
    lo, hi = np.percentile(image, [1, 99])
    for row, z in enumerate(slices):
        for col, overlay in enumerate((None, label, pred)):
            ax = axes[row, col]
            # Transpose so X runs left-right and Y top-bottom, as radiology viewers show it.
            ax.imshow(image[..., z].T, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if overlay is not None:
                ax.imshow(
                    overlay[..., z].T, cmap=cmap, vmin=0, vmax=num_classes - 1,
                    alpha=0.55, interpolation="nearest",
                )
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(("image", "label", "prediction")[col])
        axes[row, 0].set_ylabel(f"z = {z}")
    handles = [Patch(color=colours[i + 1], label=name) for i, name in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=7,
               bbox_to_anchor=(0.5, -0.02 - 0.02 * (len(handles) // 4)))
    if title:
        fig.suptitle(title, fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return path
