"""Ground-truth region-of-interest size per foreground class (for the ROI-size vs Dice Spearman
analysis, paper section 5 "Limitation")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from diffseg3d.core.metrics.inputs import check_label_map, check_spacing


def roi_size_per_class(
    label: np.ndarray, num_classes: int, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Voxel count and volume of each foreground class c = 1..C-1 in a label map.

    Args:
        label: (*spatial) int ground-truth label map.
        num_classes: C, including background.
        spacing: voxel size in mm per spatial axis.

    Returns:
        (voxels (C - 1,) int64, mm3 (C - 1,) float64); volume = voxels * prod(spacing).
    """
    label = check_label_map("label", label, num_classes)
    spacing = check_spacing(spacing, label.ndim)
    voxels = np.bincount(label.ravel(), minlength=num_classes)[1:].astype(np.int64)
    return voxels, voxels * float(np.prod(spacing))
