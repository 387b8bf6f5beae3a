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

Two options follow the released code (ImgX-DiffSeg v0.1.0, `imgx/datasets/augmentation.py`):

- `limit_translation` (`data.limit_translation`): each example's translation range is cut so
  that its foreground bounding box [lo, hi] (per axis, over all foreground classes) stays in
  the volume under the translation alone: t in [max(-m, -lo), min(m, N - 1 - hi)]
  (`augmentation.py:377-385`, per example since `FOREGROUND_RANGE` is per example,
  `imgx/datasets/iterator.py:38`). Here the content moves by +t, which is the direction these
  bounds keep inside. (The released resampling samples the input at p + t, moving the content
  by -t, so as written its bounds keep the box inside the mirrored range; this project
  implements what they are for.) Rotation and scaling can still move the box's corners out.
  An example without foreground keeps +-m.
- rotating in voxel-index space (`data.augment_space: voxel`, `augment_presets.augment_spacing`)
  is `spacing=None`: the released code rotates the index grid (`augmentation.py:241-278`), which
  is not a rigid motion when the spacing is anisotropic (2.5-5 mm slices).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from diffseg3d.core.data.augment_presets import AUGMENT_PRESETS, augment_preset

__all__ = ["AUGMENT_PRESETS", "apply_affine", "augment_preset", "foreground_box",
           "random_affine", "sample_affine_params", "sampling_matrix", "translation_bounds"]


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
                         isotropic_scale: bool = False,
                         bounds: tuple[jnp.ndarray, jnp.ndarray] | None = None,
                         ) -> dict[str, jnp.ndarray]:
    """Random parameters: "angles" (B, 3 or 1) rad in +-max_rotation, "translation" (B, ndim)
    voxels in +-max_translation, "scale" (B, ndim) in [1 - max_scale, 1 + max_scale].

    Each range is a scalar or one value per angle / axis. With `isotropic_scale` one factor per
    volume is drawn in the range of axis 0 (all axes must share it) and repeated over the axes.
    `bounds` (low, high), each (B, ndim), replaces the translation range per example (see
    `translation_bounds`); the same key draws the same uniforms either way.
    """
    n_angles = 3 if ndim == 3 else 1
    max_rad = _per_axis(max_rotation, n_angles, "max_rotation")
    max_shift = _per_axis(max_translation, ndim, "max_translation")
    max_scale = _per_axis(max_scale, ndim, "max_scale")
    if np.any(max_scale >= 1):
        raise ValueError(f"max_scale must be < 1 (a scale factor > 0), got {max_scale.tolist()}")
    k_rot, k_shift, k_scale = jax.random.split(key, 3)
    angles = jax.random.uniform(k_rot, (batch, n_angles), minval=-max_rad, maxval=max_rad)
    low, high = (-max_shift, max_shift) if bounds is None else bounds
    translation = jax.random.uniform(k_shift, (batch, ndim), minval=low, maxval=high)
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


def foreground_box(label: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Per example and axis, the first and last index holding foreground (label > 0):
    (lo (B, ndim) int32, hi (B, ndim) int32, any (B,) bool); lo = hi = 0 without foreground."""
    fg = label > 0
    ndim = label.ndim - 1
    lows, highs = [], []
    for axis in range(1, ndim + 1):
        others = tuple(a for a in range(1, ndim + 1) if a != axis)
        line = jnp.any(fg, axis=others)  # (B, N_axis)
        size = line.shape[1]
        lows.append(jnp.argmax(line, axis=1))
        highs.append(jnp.where(jnp.any(line, axis=1), size - 1 - jnp.argmax(line[:, ::-1], axis=1),
                               0))
    any_fg = jnp.any(fg.reshape(fg.shape[0], -1), axis=1)
    return (jnp.stack(lows, axis=1).astype(jnp.int32), jnp.stack(highs, axis=1).astype(jnp.int32),
            any_fg)


def translation_bounds(label: jnp.ndarray,
                       max_translation: float | Sequence[float]) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(low, high), each (B, ndim) float32: +-max_translation cut per example so that the
    foreground box [lo, hi] moved by t stays in [0, N - 1] on every axis:
    low = max(-m, -lo), high = min(m, N - 1 - hi) (released `augmentation.py:377-385`). An
    example without foreground keeps +-m. low <= 0 <= high always."""
    ndim = label.ndim - 1
    m = jnp.asarray(_per_axis(max_translation, ndim, "max_translation"), jnp.float32)
    lo, hi, any_fg = foreground_box(label)
    size = jnp.asarray(label.shape[1:], jnp.float32)
    low = jnp.maximum(-m, -lo.astype(jnp.float32))
    high = jnp.minimum(m, size - 1.0 - hi.astype(jnp.float32))
    keep = any_fg[:, None]
    return jnp.where(keep, low, -m), jnp.where(keep, high, m)


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
                  isotropic_scale: bool = False,
                  limit_translation: bool = False) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Randomly rotated/translated/scaled (image (B, *S, C), label (B, *S) int32).

    Ranges as in `sample_affine_params` (radians, voxels, scale deviation; scalar or per axis).
    `spacing` (mm per axis) makes rotations rigid in physical space on anisotropic grids;
    None rotates in voxel-index space (the released code). `limit_translation`: each example's
    translation keeps its foreground box inside the volume (`translation_bounds`). Identity
    parameters return the inputs exactly.
    """
    bounds = translation_bounds(label, max_translation) if limit_translation else None
    params = sample_affine_params(key, label.shape[0], label.ndim - 1, max_rotation,
                                  max_translation, max_scale, isotropic_scale, bounds)
    return apply_affine(image, label, params, spacing)
