"""Orientation and resampling of volumes to a target voxel spacing (scipy.ndimage).

Orientation is explicit: every volume is first reoriented to the closest RAS axis order with
`nibabel.as_closest_canonical` (a lossless permutation/flip of the voxel array that keeps the
world coordinates), so the prepared X, Y, Z axes point to patient left->Right, posterior->Anterior
and inferior->Superior. Any remaining obliquity is kept in the affine, never interpolated away.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from diffseg3d.core.data.nifti.io import Volume
from scipy import ndimage


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each voxel axis: the column norms of `affine[:3, :3]`, (3,)."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def to_canonical(volume: Volume) -> Volume:
    """Reorient to the closest RAS axis order (nibabel.as_closest_canonical); lossless."""
    img = nib.Nifti1Image(volume.array, volume.affine)
    canonical = nib.as_closest_canonical(img)
    array = np.asarray(canonical.dataobj).astype(volume.array.dtype, copy=False)
    return Volume(array=np.ascontiguousarray(array), affine=np.asarray(canonical.affine))


def resampled_shape(shape, spacing, target_spacing) -> tuple[int, ...]:
    """Shape covering the same physical extent: round(shape * spacing / target), at least 1."""
    return tuple(
        max(1, int(np.round(n * s / t)))
        for n, s, t in zip(shape, spacing, target_spacing, strict=True)
    )


def resample_to_spacing(volume: Volume, target_spacing, *, order: int) -> Volume:
    """Resample a (X, Y, Z) volume to `target_spacing` mm along its voxel axes.

    `order` 1 (trilinear) for images, 0 (nearest) for label maps. Voxel corners of the old and
    new grids coincide at the volume's lower corner, so new index j samples old index
    i = s * j + (s - 1) / 2 with s = target / spacing; the returned affine is `affine @ M` with
    that index map M, hence world coordinates are preserved. Out-of-range samples take the
    nearest edge value.
    """
    target = np.asarray(target_spacing, dtype=np.float64)
    spacing = voxel_spacing(volume.affine)
    scale = target / spacing
    offset = (scale - 1.0) / 2.0
    shape = resampled_shape(volume.array.shape, spacing, target)
    if np.allclose(scale, 1.0) and shape == volume.array.shape:
        return volume
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(scale)
    index_map[:3, 3] = offset
    source = volume.array if order == 0 else volume.array.astype(np.float32)
    array = ndimage.affine_transform(
        source, scale, offset=offset, output_shape=shape, order=order, mode="nearest"
    )
    return Volume(array=array.astype(volume.array.dtype, copy=False),
                  affine=volume.affine @ index_map)


def resample_to_grid(array: np.ndarray, affine: np.ndarray, target_affine: np.ndarray,
                     target_shape, *, order: int, cval: float = 0.0) -> np.ndarray:
    """Sample `array` (grid `affine`) on another grid (`target_affine`, `target_shape`).

    For each target voxel v the source index is inv(affine) @ target_affine @ v, i.e. both grids
    are related through world coordinates. Used to write predictions back to the original image
    space (order 0 for labels). Outside the source grid the value is `cval`.
    """
    index_map = np.linalg.inv(np.asarray(affine, np.float64)) @ np.asarray(target_affine,
                                                                          np.float64)
    return ndimage.affine_transform(
        array, index_map[:3, :3], offset=index_map[:3, 3], output_shape=tuple(target_shape),
        order=order, mode="constant", cval=cval,
    )
