"""Normalisation layers of the U-Net: GroupNorm or InstanceNorm over ``(batch, *spatial, C)``.

Both are ``flax.linen.GroupNorm`` (parameters ``scale`` and ``bias``, shape ``(C,)``), so the
parameter tree is the same for either choice; InstanceNorm is GroupNorm with one channel per
group. Statistics are computed in float32 even when ``dtype`` is bfloat16 (Flax upcasts them).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

NORMS = ("group", "instance")


def group_count(channels: int, num_groups: int) -> int:
    """Largest divisor of ``channels`` that is ``<= num_groups`` (``num_groups`` clipped).

    E.g. ``group_count(32, 8) == 8``, ``group_count(12, 8) == 6``, ``group_count(4, 8) == 4``.
    """
    if channels < 1 or num_groups < 1:
        raise ValueError(f"channels and num_groups must be >= 1, got {channels}, {num_groups}")
    for groups in range(min(num_groups, channels), 0, -1):
        if channels % groups == 0:
            return groups
    return 1


def make_norm(
    norm: str, channels: int, num_groups: int, dtype: Any = jnp.float32, name: str | None = None
) -> nn.Module:
    """GroupNorm (``norm="group"``, ``group_count(channels, num_groups)`` groups) or InstanceNorm
    (``norm="instance"``: one group per channel), epsilon 1e-5, float32 parameters."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    groups = channels if norm == "instance" else group_count(channels, num_groups)
    return nn.GroupNorm(
        num_groups=groups, epsilon=1e-5, dtype=dtype, param_dtype=jnp.float32, name=name
    )
