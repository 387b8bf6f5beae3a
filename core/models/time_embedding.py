"""Sinusoidal time embedding (Transformer / Latent Diffusion style) and its MLP.

The network receives the diffusion time as ``t = t_k / T`` in ``(0, 1]`` (ARCHITECTURE.md,
never the step index k). Inside, it is multiplied by ``time_scale`` (default 1000 = T) so the
sinusoid frequencies see the same range as integer DDPM timesteps; without it, ``t`` in
``(0, 1]`` would barely turn the low-frequency components.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """LDM ``timestep_embedding``: ``(batch,) -> (batch, dim)`` float32, ``[cos | sin]``.

    With ``half = dim // 2`` and ``freq_i = max_period ** (-i / half)``, ``i < half``:
    ``emb[:, i] = cos(t * freq_i)``, ``emb[:, half + i] = sin(t * freq_i)`` (Vaswani et al.
    2017 positional encoding as used by Rombach et al. 2022, cited in paper sec. 4). An odd
    ``dim`` gets one trailing zero column.
    """
    if dim < 2:
        raise ValueError(f"time embedding dim must be >= 2, got {dim}")
    half = dim // 2
    freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
    args = jnp.asarray(t, jnp.float32)[:, None] * freqs[None, :]
    emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
    if dim % 2:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class TimeEmbedding(nn.Module):
    """``t (batch,) -> (batch, 4 * base_dim)``: sinusoid of width ``base_dim``, then
    Dense(4 base_dim) - SiLU - Dense(4 base_dim). The U-Net uses ``base_dim = channels[0]``."""

    base_dim: int
    time_scale: float = 1000.0  # multiplies t = t_k / T before the sinusoid (see module doc)
    dtype: Any = jnp.float32  # compute dtype; parameters are float32

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        emb = sinusoidal_embedding(t * self.time_scale, self.base_dim)
        width = 4 * self.base_dim
        emb = nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32, name="dense1")(emb)
        emb = nn.silu(emb)
        return nn.Dense(width, dtype=self.dtype, param_dtype=jnp.float32, name="dense2")(emb)
