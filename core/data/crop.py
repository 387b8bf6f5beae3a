"""Centre crop/pad to a target shape, centred on the image geometry or an image body mask.

The label is never consulted: the crop window is a function of the image alone, so cropping
cannot leak the ground truth into the test set (DESIGN.md, "Data flow").
"""

from __future__ import annotations

import numpy as np
from diffseg3d.core.data.nifti.io import Volume

#: Crop centres: "image" = the geometric centre of the volume, "body" = the centre of the
#: bounding box of the body mask (voxels above 10 % of the image's intensity range).
CROP_CENTRES = ("image", "body")


def body_mask(image: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Foreground of an image: voxels above min + fraction * (max - min), (X, Y, Z) bool."""
    lo, hi = float(image.min()), float(image.max())
    return image > lo + fraction * (hi - lo)


def crop_start(image: np.ndarray, target_shape, centre: str = "image") -> np.ndarray:
    """Start index (may be negative: padding) of the target window along each axis, (3,) int.

    The window's centre is the image centre or the body-mask bounding-box centre (`centre`).
    """
    if centre not in CROP_CENTRES:
        raise ValueError(f"crop centre {centre!r} is not one of {CROP_CENTRES}")
    shape = np.asarray(image.shape)
    target = np.asarray(target_shape)
    if centre == "body":
        mask = body_mask(image)
        if mask.any():
            idx = np.nonzero(mask)
            lo = np.array([i.min() for i in idx])
            hi = np.array([i.max() + 1 for i in idx])
            mid2 = lo + hi  # twice the centre, kept integer for an exact split
            return (mid2 - target) // 2
    return (shape - target) // 2


def crop_or_pad(volume: Volume, start, target_shape, *, pad_value: float = 0.0) -> Volume:
    """Window `[start, start + target_shape)` of the volume, padding with `pad_value` outside.

    The affine is shifted so that every kept voxel keeps its world position.
    """
    start = np.asarray(start, dtype=np.int64)
    target = tuple(int(t) for t in target_shape)
    out = np.full(target, pad_value, dtype=volume.array.dtype)
    src, dst = [], []
    for s, n, t in zip(start, volume.array.shape, target, strict=True):
        a, b = max(s, 0), min(s + t, n)
        if b <= a:
            src.append(slice(0, 0))
            dst.append(slice(0, 0))
        else:
            src.append(slice(a, b))
            dst.append(slice(a - s, b - s))
    out[tuple(dst)] = volume.array[tuple(src)]
    shift = np.eye(4)
    shift[:3, 3] = start
    return Volume(array=out, affine=volume.affine @ shift)
