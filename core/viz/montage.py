"""Slice montage: an image with label maps overlaid in class colours, one row per slice.

The one renderer behind the trial's `predictions/<case>.png` (`experiments.trial.montage`) and the
paper's Fig. 2 (`analysis.figures.prediction_montage`), so both show a case in the same colours
and the same orientation.

Orientation: volumes are prepared in RAS voxel order (`core.data.resample.to_canonical`: axis 0
towards the patient's Right, axis 1 Anterior, axis 2 Superior). An axial slice (X, Y) is shown in
the radiological convention: anterior at the top, the patient's right on the viewer's left.

Pure NumPy and matplotlib's object-oriented API (no pyplot, so no global figure state and no
backend to choose); figures have a fixed size in inches and are saved at `DPI` without cropping,
so a PNG is exactly `figsize * DPI` pixels.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

DPI = 100
#: Opacity of the label colours over the grey image.
OVERLAY_ALPHA = 0.6
#: Intensity window: these percentiles of the shown slices map to black and white.
WINDOW_PERCENTILES = (1.0, 99.0)


def class_colours(num_classes: int) -> np.ndarray:
    """(num_classes, 4) RGBA: label 0 (background) transparent, one distinct colour per class.

    tab10 up to 10 foreground classes; beyond, tab20's dark shades first, then its light ones,
    so neighbouring labels never get two shades of the same hue.
    """
    from matplotlib import colormaps

    num_fg = max(num_classes - 1, 0)
    if num_fg <= 10:
        fg = [colormaps["tab10"](i) for i in range(num_fg)]
    else:
        order = list(range(0, 20, 2)) + list(range(1, 20, 2))
        fg = [colormaps["tab20"](order[i % 20]) for i in range(num_fg)]
    return np.array([(0.0, 0.0, 0.0, 0.0), *fg], dtype=np.float64).reshape(-1, 4)


def class_colormap(num_classes: int) -> ListedColormap:
    """`class_colours` as a colormap for label values 0 .. num_classes - 1."""
    return ListedColormap(class_colours(num_classes))


def display_slice(slice_xy: np.ndarray) -> np.ndarray:
    """(X, Y) RAS slice -> (Y, X) array for `imshow` (row 0 on top) in radiological view.

    Rows run anterior (top) to posterior, columns from the patient's right (viewer's left) to
    the patient's left: both axes of the transposed slice reversed.
    """
    slice_xy = np.asarray(slice_xy)
    if slice_xy.ndim != 2:
        raise ValueError(f"display_slice needs an (X, Y) slice, got shape {slice_xy.shape}")
    return slice_xy.T[::-1, ::-1]


def montage_figure(
    image: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray]],
    class_names: Sequence[str],
    slices: Sequence[int],
    *,
    title: str = "",
    row_labels: Sequence[str] | None = None,
    panel_inches: float = 2.5,
) -> Figure:
    """A grid: one row per slice, columns image | each panel's label map over the image.

    Args:
      image: (X, Y, Z) float intensities.
      panels: [(column title, (X, Y, Z) int label map)], 0 = background, i + 1 =
        `class_names[i]`; e.g. ground truth then predictions.
      class_names: foreground names (the legend).
      slices: indices along Z, one row each.
      title: figure title.
      row_labels: one label per row; default "z = <index>".
      panel_inches: side of one panel; the figure is (1 + len(panels)) * panel_inches wide and
        len(slices) * panel_inches + 1 (title and legend) high.

    Returns:
      the figure (not saved; see `save_figure`).
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"montage image must be (X, Y, Z), got shape {image.shape}")
    for name, label in panels:
        if np.shape(label) != image.shape:
            raise ValueError(
                f"montage panel {name!r} has shape {np.shape(label)}, image {image.shape}"
            )
    if not slices:
        raise ValueError("montage needs at least one slice")
    row_labels = [f"z = {z}" for z in slices] if row_labels is None else list(row_labels)
    if len(row_labels) != len(slices):
        raise ValueError(f"montage has {len(slices)} slices but {len(row_labels)} row labels")
    num_classes = len(class_names) + 1
    cmap = class_colormap(num_classes)
    lo, hi = np.percentile(image[..., list(slices)], WINDOW_PERCENTILES)
    cols = 1 + len(panels)
    fig = Figure(
        figsize=(cols * panel_inches, len(slices) * panel_inches + 1.0), layout="constrained"
    )
    axes = fig.subplots(len(slices), cols, squeeze=False)
    for row, z in enumerate(slices):
        grey = display_slice(image[..., z])
        overlays = [None] + [np.asarray(label)[..., z] for _, label in panels]
        for col, overlay in enumerate(overlays):
            ax = axes[row, col]
            ax.imshow(grey, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            if overlay is not None:
                ax.imshow(display_slice(overlay), cmap=cmap, vmin=0, vmax=num_classes - 1,
                          alpha=OVERLAY_ALPHA, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title("image" if col == 0 else panels[col - 1][0], fontsize=9)
        axes[row, 0].set_ylabel(row_labels[row])
    colours = class_colours(num_classes)
    handles = [Patch(color=colours[i + 1], label=name) for i, name in enumerate(class_names)]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
                   fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Write `fig` to `path` (format from the suffix) at `DPI`, uncropped; create the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path
