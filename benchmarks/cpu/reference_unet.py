"""The reference: the paper's 3D U-Net written the straightforward way, for side-by-side speed.

Same architecture as ``diffseg3d.core.models.UNet`` (levels, channels, residual blocks, GroupNorm,
sinusoidal time embedding + MLP, scale-shift time injection, skip concatenation, 1x1 head), but
with stock Flax layers and no speed tricks: ``nn.Conv`` 3x3x3 (one ``lax.conv`` over all spatial
dims), ``nn.Conv`` 2x2x2 stride 2 down, ``nn.ConvTranspose`` 2x2x2 stride 2 up, float32, no
remat. Module and parameter names equal the core model's, so the two parameter trees have the
same structure and size (the FLOPs match); the only difference in meaning is that
``nn.ConvTranspose`` (``transpose_kernel=False``) applies the up-sampling kernel flipped, which
``flip_upsample_kernels`` converts (used by the harness test to check both compute the same map).

Shapes: ``image (batch, *S, 1)``, ``x_t (batch, *S, num_classes)``, ``t (batch,)`` = t_k / T;
output ``(batch, *S, num_classes)`` float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


def _groups(channels: int, num_groups: int) -> int:
    """Largest divisor of ``channels`` not above ``num_groups`` (GroupNorm needs a divisor)."""
    return max(g for g in range(1, min(channels, num_groups) + 1) if channels % g == 0)


def _sinusoid(t: jax.Array, dim: int) -> jax.Array:
    """``(batch,) -> (batch, dim)``: ``[cos(t f_i) | sin(t f_i)]``, ``f_i = 10000^(-i/(dim/2))``
    (Vaswani et al. 2017 as used by latent diffusion)."""
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / half)
    args = t[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    return jnp.pad(emb, ((0, 0), (0, dim % 2)))


class _TimeMLP(nn.Module):
    base_dim: int
    time_scale: float

    @nn.compact
    def __call__(self, t):
        emb = _sinusoid(t * self.time_scale, self.base_dim)
        emb = nn.silu(nn.Dense(4 * self.base_dim, name="dense1")(emb))
        return nn.Dense(4 * self.base_dim, name="dense2")(emb)


class _ResBlock(nn.Module):
    features: int
    num_groups: int

    @nn.compact
    def __call__(self, x, t_emb=None):
        c = self.features
        rank = x.ndim - 2
        h = nn.Conv(c, (3,) * rank, padding="SAME", name="conv1")(x)
        h = nn.GroupNorm(_groups(c, self.num_groups), epsilon=1e-5, name="norm1")(h)
        if t_emb is not None:
            ss = nn.Dense(2 * c, name="time_proj")(nn.silu(t_emb))
            scale, shift = jnp.split(ss.reshape(ss.shape[0], *([1] * rank), 2 * c), 2, axis=-1)
            h = h * (1 + scale) + shift
        h = nn.Conv(c, (3,) * rank, padding="SAME", name="conv2")(nn.silu(h))
        h = nn.GroupNorm(_groups(c, self.num_groups), epsilon=1e-5, name="norm2")(h)
        skip = x if x.shape[-1] == c else nn.Dense(c, name="skip_proj")(x)
        return nn.silu(h + skip)


class ReferenceUNet(nn.Module):
    """Straightforward float32 Flax U-Net; ``__call__(image, x_t=None, t=None)`` like ``UNet``.

    Fields mirror ``UNet``'s: ``num_classes``, ``channels`` (paper (32, 64, 128, 256)),
    ``num_res_blocks`` (2), ``num_groups`` (8, GroupNorm only), ``diffusion`` (mask + time
    inputs), ``time_scale`` (multiplies t before the sinusoid).
    """

    num_classes: int
    channels: Sequence[int] = (32, 64, 128, 256)
    num_res_blocks: int = 2
    num_groups: int = 8
    diffusion: bool = True
    time_scale: float = 1000.0

    @nn.compact
    def __call__(self, image, x_t=None, t=None):
        rank = image.ndim - 2
        h, t_emb = image, None
        if self.diffusion:
            h = jnp.concatenate([image, x_t], axis=-1)
            t = jnp.broadcast_to(jnp.asarray(t, jnp.float32), (image.shape[0],))
            t_emb = _TimeMLP(self.channels[0], self.time_scale, name="time_embedding")(t)
        h = nn.Conv(self.channels[0], (3,) * rank, padding="SAME", name="stem")(h)
        skips = []
        for level, ch in enumerate(self.channels):
            for i in range(self.num_res_blocks):
                h = _ResBlock(ch, self.num_groups, name=f"down{level}_block{i}")(h, t_emb)
            if level < len(self.channels) - 1:
                skips.append(h)
                h = nn.Conv(
                    self.channels[level + 1], (2,) * rank, strides=(2,) * rank,
                    padding="VALID", name=f"down{level}_downsample",
                )(h)
        for level in reversed(range(len(self.channels) - 1)):
            ch = self.channels[level]
            h = nn.ConvTranspose(
                ch, (2,) * rank, strides=(2,) * rank, padding="VALID",
                name=f"up{level}_upsample",
            )(h)
            h = jnp.concatenate([h, skips.pop()], axis=-1)
            for i in range(self.num_res_blocks):
                h = _ResBlock(ch, self.num_groups, name=f"up{level}_block{i}")(h, t_emb)
        return nn.Dense(self.num_classes, name="head")(h)


def flip_upsample_kernels(params: dict) -> dict:
    """Parameters of the core ``UNet`` -> the same map in ``ReferenceUNet`` (or back).

    The core up-sampling computes ``y[2p + o] = x[p] @ kernel[o]``; ``nn.ConvTranspose`` puts
    ``kernel[1 - o]`` at offset ``o``, so every ``up*_upsample`` kernel is flipped on its spatial
    axes. All other parameters are shared as they are.
    """
    out = {}
    for name, sub in params.items():
        if name.startswith("up") and name.endswith("_upsample"):
            kernel = sub["kernel"]
            rank = kernel.ndim - 2
            sub = {**sub, "kernel": kernel[(slice(None, None, -1),) * rank]}
        out[name] = sub
    return out
