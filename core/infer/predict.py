"""Supervised U-Net inference: one forward pass, argmax over classes."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _predictor(model: nn.Module):
    return jax.jit(lambda params, image: jnp.argmax(
        model.apply({"params": params}, image), axis=-1).astype(jnp.int32))


# Modules are frozen dataclasses, so equal models share one compiled predictor per input shape.
_cached_predictor = functools.lru_cache(maxsize=16)(_predictor)


def predict_unet(model: nn.Module, params: Any, image: jax.Array) -> jax.Array:
    """Label map of a non-diffusion U-Net: image (B, *S, 1) -> (B, *S) int32 argmax of logits."""
    if model.diffusion:
        raise ValueError("predict_unet needs UNet(diffusion=False); use infer.make_sampler")
    try:
        predictor = _cached_predictor(model)
    except TypeError:  # a field is unhashable (e.g. channels given as a list): compile afresh
        predictor = _predictor(model)
    return predictor(params, image)
