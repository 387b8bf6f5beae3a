"""L2 loss on predicted noise (noise prediction, paper 3.3; weight 0.1 is applied by the step)."""

from __future__ import annotations

import jax.numpy as jnp


def noise_l2(eps_hat: jnp.ndarray, eps: jnp.ndarray) -> jnp.ndarray:
    """Mean squared error over all elements: mean((eps_hat - eps)^2).

    Args:
        eps_hat: (batch, *spatial, C) predicted noise.
        eps: (batch, *spatial, C) noise used by q_sample.

    Returns:
        () float32.
    """
    if eps_hat.shape != eps.shape:
        raise ValueError(f"noise_l2 shapes differ: eps_hat {eps_hat.shape} vs eps {eps.shape}.")
    return jnp.mean(jnp.square(eps_hat.astype(jnp.float32) - eps.astype(jnp.float32)))
