"""The paper's Fig. 2: image, ground truth and predictions of one slice (`core.viz.montage`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from diffseg3d.analysis.figures.saving import save
from diffseg3d.core.viz.montage import montage_figure


def best_slice(label: np.ndarray) -> int:
    """Index along the last axis with the most foreground classes, then most foreground voxels."""
    spatial = label.reshape(-1, label.shape[-1])
    n_classes = np.array([len(np.unique(spatial[:, z][spatial[:, z] > 0]))
                          for z in range(label.shape[-1])])
    n_voxels = (spatial > 0).sum(0)
    return int(np.lexsort((n_voxels, n_classes))[-1])


def prediction_montage(image: np.ndarray, panels: list[tuple[str, np.ndarray]],
                       class_names: list[str], stem: Path, title: str = "",
                       z: int | None = None, panel_inches: float = 2.5) -> list[Path]:
    """Fig. 2: the image, then each (title, label map) overlaid in class colours, one slice.

    image: (X, Y) float; panels: [(title, (X, Y) int)], ground truth first by convention;
    class_names: foreground names (label i + 1); z: the slice's index, shown as the row label.
    Drawn by `core.viz.montage` (radiological view, the trial PNGs' colours); the figure is
    `(len(panels) + 1) * panel_inches` wide and `panel_inches + 1` high.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"prediction_montage needs an (X, Y) slice, got shape {image.shape}")
    volumes = [(name, np.asarray(label)[..., None]) for name, label in panels]
    fig = montage_figure(image[..., None], volumes, class_names, [0], title=title,
                         row_labels=["" if z is None else f"z = {z}"],
                         panel_inches=panel_inches)
    return save(fig, stem)
