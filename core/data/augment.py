"""Random affine augmentation on device (paper section 4: rotation, translation, scaling).

For each volume of a batch, rotation angles (one per axis pair; 3 in 3D, 1 in 2D) are drawn
uniformly in +-max_rotation (radians, per angle), a translation in +-max_translation voxels per
axis and a scaling factor in [1 - max_scale, 1 + max_scale] per axis (or one factor for all axes,
`isotropic_scale`, drawn in the range of the first axis). Ranges per data set: `AUGMENT_PRESETS`.
The content is rotated and scaled about the volume centre c in physical space (voxel spacing
D = diag(spacing), scales S = diag(s)), then translated, so an output voxel p samples the input at

    q = c + D^-1 R^T D S^-1 (p - c - t),

with `jax.scipy.ndimage.map_coordinates`: order 1 (linear) for images, order 0 (nearest) for
labels, zero (background) outside the input. All arithmetic on coordinates is elementwise in
float32 (no matmul, whose precision is backend-dependent), so identity parameters (0 rad, 0
voxels, scale 1) reproduce the input exactly. Pure and jittable; deterministic for a key.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from diffseg3d.core.data.augment_presets import AUGMENT_PRESETS, augment_preset

__all__ = ["AUGMENT_PRESETS", "apply_affine", "augment_preset", "random_affine",
           "sample_affine_params", "sampling_matrix"]


def _rotation(angles: jnp.ndarray, ndim: int) -> jnp.ndarray:
    """Rotation matrix (ndim, ndim) from angles (3,) about X, Y, Z (3D) or (1,) (2D)."""
    c, s = jnp.cos(angles), jnp.sin(angles)
    if ndim == 2:
        return jnp.array([[c[0], -s[0]], [s[0], c[0]]])
    one, zero = jnp.ones((), angles.dtype), jnp.zeros((), angles.dtype)
    rx = jnp.array([[one, zero, zero], [zero, c[0], -s[0]], [zero, s[0], c[0]]])
    ry = jnp.array([[c[1], zero, s[1]], [zero, one, zero], [-s[1], zero, c[1]]])
    rz = jnp.array([[c[2], -s[2], zero], [s[2], c[2], zero], [zero, zero, one]])
    hi = jax.lax.Precision.HIGHEST
    return jnp.matmul(rz, jnp.matmul(ry, rx, precision=hi), precision=hi)


def _per_axis(value: float | Sequence[float], count: int, name: str) -> np.ndarray:
    """`value` as a (count,) float64 array: a scalar is repeated, a sequence must have `count`."""
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if values.ndim != 1 or values.shape[0] not in (1, count):
        raise ValueError(f"{name} needs 1 or {count} values (one per axis), got {value!r}")
    if np.any(values < 0):
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return np.broadcast_to(values, (count,))


def sample_affine_params(key: jax.Array, batch: int, ndim: int,
                         max_rotation: float | Sequence[float],
                         max_translation: float | Sequence[float],
                         max_scale: float | Sequence[float],
                         isotropic_scale: bool = False) -> dict[str, jnp.ndarray]:
    """Random parameters: "angles" (B, 3 or 1) rad in +-max_rotation, "translation" (B, ndim)
    voxels in +-max_translation, "scale" (B, ndim) in [1 - max_scale, 1 + max_scale].

    Each range is a scalar or one value per angle / axis. With `isotropic_scale` one factor per
    volume is drawn in the range of axis 0 (all axes must share it) and repeated over the axes.
    """
    n_angles = 3 if ndim == 3 else 1
    max_rad = _per_axis(max_rotation, n_angles, "max_rotation")
    max_shift = _per_axis(max_translation, ndim, "max_translation")
    max_scale = _per_axis(max_scale, ndim, "max_scale")
    if np.any(max_scale >= 1):
        raise ValueError(f"max_scale must be < 1 (a scale factor > 0), got {max_scale.tolist()}")
    k_rot, k_shift, k_scale = jax.random.split(key, 3)
    angles = jax.random.uniform(k_rot, (batch, n_angles), minval=-max_rad, maxval=max_rad)
    translation = jax.random.uniform(k_shift, (batch, ndim), minval=-max_shift,
                                     maxval=max_shift)
    if isotropic_scale:
        if np.any(max_scale != max_scale[0]):
            raise ValueError(f"isotropic_scale needs one max_scale for all axes, got "
                             f"{max_scale.tolist()}")
        # 1 -+ m in float64 first: the phantom's 0.1 gives exactly the former [0.9, 1.1].
        m = float(max_scale[0])
        factor = jax.random.uniform(k_scale, (batch,), minval=1.0 - m, maxval=1.0 + m)
        scale = jnp.repeat(factor[:, None], ndim, axis=1)
    else:
        scale = jax.random.uniform(k_scale, (batch, ndim), minval=1.0 - max_scale,
                                   maxval=1.0 + max_scale)
    return {"angles": angles, "translation": translation, "scale": scale}


def sampling_matrix(angles: jnp.ndarray, scale: jnp.ndarray, spacing) -> jnp.ndarray:
    """M = D^-1 R^T D S^-1 (ndim, ndim) for one volume: output offset -> input offset; `scale`
    is (ndim,) per axis or a scalar."""
    ndim = len(spacing)
    rot = _rotation(angles, ndim)
    sp = jnp.asarray(spacing, jnp.float32)
    scale = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), (ndim,))
    return rot.T * (sp[None, :] / sp[:, None]) / scale[None, :]


def _warp(volume: jnp.ndarray, matrix: jnp.ndarray, translation: jnp.ndarray, order: int):
    """Resample one volume (*S) at q = c + M (p - c - t)."""
    shape = volume.shape
    centre = [(n - 1) / 2.0 for n in shape]
    grids = jnp.meshgrid(*[jnp.arange(n, dtype=jnp.float32) for n in shape], indexing="ij")
    offsets = [g - c - translation[i] for i, (g, c) in enumerate(zip(grids, centre,
                                                                      strict=True))]
    coords = []
    for i in range(len(shape)):
        acc = matrix[i, 0] * offsets[0]
        for j in range(1, len(shape)):
            acc = acc + matrix[i, j] * offsets[j]
        coords.append(acc + centre[i])
    return jax.scipy.ndimage.map_coordinates(volume, coords, order=order, mode="constant",
                                             cval=0.0)


def apply_affine(image: jnp.ndarray, label: jnp.ndarray, params: dict,
                 spacing=None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Warp image (B, *S, C) linearly and label (B, *S) by nearest neighbour with `params`
    ("scale" (B, ndim) per axis or (B,) isotropic)."""
    ndim = label.ndim - 1
    spacing = (1.0,) * ndim if spacing is None else tuple(float(s) for s in spacing)
    matrices = jax.vmap(lambda a, s: sampling_matrix(a, s, spacing))(params["angles"],
                                                                      params["scale"])
    translation = params["translation"].astype(jnp.float32)

    def one(img, lbl, m, t):
        channels = [_warp(img[..., ch].astype(jnp.float32), m, t, order=1)
                    for ch in range(img.shape[-1])]
        warped_label = _warp(lbl.astype(jnp.float32), m, t, order=0)
        return (jnp.stack(channels, axis=-1).astype(img.dtype),
                jnp.round(warped_label).astype(jnp.int32))

    return jax.vmap(one)(image, label, matrices, translation)


def random_affine(key: jax.Array, image: jnp.ndarray, label: jnp.ndarray,
                  max_rotation: float | Sequence[float],
                  max_translation: float | Sequence[float],
                  max_scale: float | Sequence[float], spacing=None,
                  isotropic_scale: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Randomly rotated/translated/scaled (image (B, *S, C), label (B, *S) int32).

    Ranges as in `sample_affine_params` (radians, voxels, scale deviation; scalar or per axis).
    `spacing` (mm per axis) makes rotations rigid in physical space on anisotropic grids;
    None treats voxels as isotropic. Identity parameters return the inputs exactly.
    """
    params = sample_affine_params(key, label.shape[0], label.ndim - 1, max_rotation,
                                  max_translation, max_scale, isotropic_scale)
    return apply_affine(image, label, params, spacing)
