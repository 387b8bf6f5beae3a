"""Conversions between label maps, logits and masks in diffusion space.

A mask in diffusion space is x0 = 2 onehot(label) - 1 over all C classes (background included),
so its values are in [-1, 1] and the channel axis is last: (batch, *spatial, C). Mask prediction
maps logits to x0_hat = 2 softmax(logits) - 1 (design card, paper 3.1).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: Probability floor of `mask_to_logits`: log(1e-6) ~ -13.8 keeps losses finite when an x0
#: inferred from predicted noise (eq. 10) falls outside [-1, 1].
MASK_PROBABILITY_FLOOR = 1e-6


def label_to_mask(label: jnp.ndarray, num_classes: int) -> jnp.ndarray:
    """(batch, *spatial) int label map -> (batch, *spatial, C) float32 mask 2 onehot - 1."""
    return 2.0 * jax.nn.one_hot(label, num_classes, dtype=jnp.float32) - 1.0


def logits_to_mask(logits: jnp.ndarray) -> jnp.ndarray:
    """(batch, *spatial, C) logits -> float32 mask 2 softmax(logits) - 1 in [-1, 1]."""
    return 2.0 * jax.nn.softmax(logits.astype(jnp.float32), axis=-1) - 1.0


def mask_to_logits(x0: jnp.ndarray) -> jnp.ndarray:
    """(batch, *spatial, C) mask -> log(clip((x0 + 1) / 2, 1e-6, 1)), pseudo-logits for losses.

    Inverse of `logits_to_mask` up to a per-voxel constant (softmax is shift invariant) when x0 is
    a valid mask; used for cross entropy and Dice on a mask inferred from predicted noise.
    """
    probs = jnp.clip((x0.astype(jnp.float32) + 1.0) / 2.0, MASK_PROBABILITY_FLOOR, 1.0)
    return jnp.log(probs)


def mask_to_label(x0: jnp.ndarray) -> jnp.ndarray:
    """(batch, *spatial, C) mask -> (batch, *spatial) int32 label, argmax over classes."""
    return jnp.argmax(x0, axis=-1).astype(jnp.int32)
