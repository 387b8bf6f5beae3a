"""Supervised U-Net inference: one forward pass, argmax over classes."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@functools.lru_cache(maxsize=16)
def _jitted_predictor(model: nn.Module):
    # Modules are frozen dataclasses (hashable), so each distinct model compiles once per shape.
    return jax.jit(lambda params, image: jnp.argmax(
        model.apply({"params": params}, image), axis=-1).astype(jnp.int32))


def predict_unet(model: nn.Module, params: Any, image: jax.Array) -> jax.Array:
    """Label map of a non-diffusion U-Net: image (B, *S, 1) -> (B, *S) int32 argmax of logits."""
    if model.diffusion:
        raise ValueError("predict_unet needs UNet(diffusion=False); use infer.make_sampler")
    return _jitted_predictor(model)(params, image)
