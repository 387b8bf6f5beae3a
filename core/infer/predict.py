"""Supervised U-Net inference: one forward pass, argmax over classes."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def jit_predictor(model: nn.Module):
    """The jitted `(params, image (B, *S, 1)) -> label map (B, *S) int32` of a U-Net: one
    forward pass and argmax over classes (what `predict_unet` runs)."""
    return jax.jit(lambda params, image: jnp.argmax(
        model.apply({"params": params}, image), axis=-1).astype(jnp.int32))


# Modules are frozen dataclasses, so equal models share one compiled predictor per input shape.
_cached_predictor = functools.lru_cache(maxsize=16)(jit_predictor)


def predict_unet(model: nn.Module, params: Any, image: jax.Array) -> jax.Array:
    """Label map of a non-diffusion U-Net: image (B, *S, 1) -> (B, *S) int32 argmax of logits."""
    if model.diffusion:
        raise ValueError("predict_unet needs UNet(diffusion=False); use infer.make_sampler")
    try:
        predictor = _cached_predictor(model)
    except TypeError:  # a field is unhashable (e.g. channels given as a list): compile afresh
        predictor = jit_predictor(model)
    return predictor(params, image)


@functools.lru_cache(maxsize=16)
def _probabilities(model: nn.Module):
    return jax.jit(lambda params, image: jax.nn.softmax(
        model.apply({"params": params}, image).astype(jnp.float32), axis=-1))


def predict_unet_probabilities(model: nn.Module, params: Any, image: jax.Array) -> jax.Array:
    """Softmax class probabilities of a non-diffusion U-Net: image (B, *S, 1) -> (B, *S, C)
    float32 (its calibration and entropy, the baseline of a diffusion ensemble's)."""
    if model.diffusion:
        raise ValueError("predict_unet_probabilities needs UNet(diffusion=False)")
    try:
        fn = _probabilities(model)
    except TypeError:  # an unhashable field: compile afresh
        fn = _probabilities.__wrapped__(model)
    return fn(params, image)
