"""Writing predicted label maps as NIfTI, in the prepared space or the original image space."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from diffseg3d.core.data.dataset import PreparedDataset
from diffseg3d.core.data.nifti.io import DataError, write_volume
from diffseg3d.core.data.resample import resample_to_grid


def to_original_space(dataset: PreparedDataset, case_id: str,
                      label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Resample a prepared-space label map (X, Y, Z) onto the original image grid.

    Both grids are related through world coordinates (prepared affine vs. the original affine
    recorded in dataset.json), so reorientation, resampling and crop/pad are all undone by one
    nearest-neighbour resampling; voxels outside the prepared window become background (0).
    Returns (label on the original grid, original affine).
    """
    original = dataset.original(case_id)
    if not original or "affine" not in original or "shape" not in original:
        raise DataError(f"{dataset.root / 'dataset.json'}: case {case_id!r} records no original "
                        "image affine/shape; cannot write back to the original space")
    target_affine = np.asarray(original["affine"], dtype=np.float64)
    out = resample_to_grid(np.asarray(label), dataset.affine(case_id), target_affine,
                           original["shape"], order=0, cval=0)
    return out, target_affine


def write_prediction(dataset: PreparedDataset, case_id: str, label, path: Path | str,
                     original_space: bool = False) -> Path:
    """Write a predicted label map (X, Y, Z) of `case_id` to `path` (.nii or .nii.gz).

    In the prepared space with the case's prepared affine, or (`original_space=True`) resampled
    back to the original image's grid and affine.
    """
    label = np.asarray(label)
    if label.shape != dataset.shape:
        raise DataError(f"{path}: prediction shape {label.shape} differs from the prepared "
                        f"shape {dataset.shape} of {dataset.root}")
    if label.size and (label.min() < 0 or label.max() >= dataset.num_classes):
        raise DataError(f"{path}: prediction holds labels outside 0..{dataset.num_classes - 1}")
    label = label.astype(np.int32)
    if original_space:
        label, affine = to_original_space(dataset, case_id, label)
    else:
        affine = dataset.affine(case_id)
    path = Path(path)
    write_volume(path, label, affine, is_label=True)
    return path
