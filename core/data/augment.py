"""Random affine augmentation on device (paper section 4: rotation, translation, scaling).

For each volume of a batch, rotation angles (one per axis pair; 3 in 3D, 1 in 2D) are drawn
uniformly in +-max_rotation_deg, a translation in +-max_translation voxels per axis and one
isotropic scale in scale_range. The content is rotated and scaled about the volume centre c in
physical space (voxel spacing D = diag(spacing)), then translated, so an output voxel p samples
the input at

    q = c + D^-1 R^T D (p - c - t) / s,

with `jax.scipy.ndimage.map_coordinates`: order 1 (linear) for images, order 0 (nearest) for
labels, zero (background) outside the input. All arithmetic on coordinates is elementwise in
float32 (no matmul, whose precision is backend-dependent), so identity parameters (0 deg, 0
voxels, scale 1) reproduce the input exactly. Pure and jittable; deterministic for a key.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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


def sample_affine_params(key: jax.Array, batch: int, ndim: int, max_rotation_deg: float,
                         max_translation: float, scale_range) -> dict[str, jnp.ndarray]:
    """Random parameters: "angles" (B, 3 or 1) rad, "translation" (B, ndim) voxels,
    "scale" (B,)."""
    k_rot, k_shift, k_scale = jax.random.split(key, 3)
    n_angles = 3 if ndim == 3 else 1
    max_rad = float(np.deg2rad(max_rotation_deg))
    angles = jax.random.uniform(k_rot, (batch, n_angles), minval=-max_rad, maxval=max_rad)
    translation = jax.random.uniform(k_shift, (batch, ndim), minval=-max_translation,
                                     maxval=max_translation)
    scale = jax.random.uniform(k_scale, (batch,), minval=scale_range[0], maxval=scale_range[1])
    return {"angles": angles, "translation": translation, "scale": scale}


def sampling_matrix(angles: jnp.ndarray, scale: jnp.ndarray, spacing) -> jnp.ndarray:
    """M = D^-1 R^T D / s (ndim, ndim) for one volume: output offset -> input offset."""
    ndim = len(spacing)
    rot = _rotation(angles, ndim)
    sp = jnp.asarray(spacing, jnp.float32)
    return rot.T * (sp[None, :] / sp[:, None]) / scale


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
    """Warp image (B, *S, C) linearly and label (B, *S) by nearest neighbour with `params`."""
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
                  max_rotation_deg: float, max_translation: float, scale_range,
                  spacing=None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Randomly rotated/translated/scaled (image (B, *S, C), label (B, *S) int32).

    `spacing` (mm per axis) makes rotations rigid in physical space on anisotropic grids;
    None treats voxels as isotropic. Identity parameters return the inputs exactly.
    """
    params = sample_affine_params(key, label.shape[0], label.ndim - 1, max_rotation_deg,
                                  max_translation, scale_range)
    return apply_affine(image, label, params, spacing)
