"""The training state: one pytree holding everything a step updates (and a checkpoint saves)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct


@struct.dataclass
class TrainState:
    """`step` () int32 optimiser steps taken; `params` float32 model parameters; `opt_state` the
    optax state. Everything is a leaf array, so it donates, shards and checkpoints as one tree."""

    step: jax.Array
    params: Any
    opt_state: Any


def init_params(
    model: nn.Module, key: jax.Array, image_shape: tuple[int, ...], diffusion: bool
) -> Any:
    """Initialise model parameters from dummy inputs of `image_shape = (batch, *spatial, 1)`.

    A diffusion model also takes a noisy mask `(batch, *spatial, num_classes)` and a time
    `(batch,)`; a plain U-Net only the image. `model.init` is jitted: XLA drops the forward
    pass whose output init discards, so a paper-size shape costs seconds and no activation
    memory (eager init ran the whole 256x256x48 forward pass op by op).
    """
    if len(image_shape) < 3:
        raise ValueError(
            f"image_shape must be (batch, *spatial, channels), got {tuple(image_shape)}"
        )
    image = jnp.zeros(image_shape, jnp.float32)
    inputs = (image,)
    if diffusion:
        x_t = jnp.zeros((*image_shape[:-1], model.num_classes), jnp.float32)
        t = jnp.zeros((image_shape[0],), jnp.float32)
        inputs = (image, x_t, t)
    return jax.jit(model.init)(key, *inputs)["params"]


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    key: jax.Array,
    image_shape: tuple[int, ...],
    diffusion: bool,
) -> TrainState:
    """A fresh `TrainState` at step 0 (params from `key`, optimiser state from `tx.init`)."""
    params = init_params(model, key, image_shape, diffusion)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


#: Compile options of a one-off initialisation program on XLA:CPU: LLVM backend optimisation
#: level 1 instead of the default 2. The program runs once, so only its compile time matters,
#: and the parameter initialisers (threefry + truncated normal per kernel) are what level 2
#: spends its time on; level 1 gives bit-identical values (tests/core/train/test_state.py).
#: Dated timings: docs/BENCHMARKS.md. Other backends keep their defaults (not measured there).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}


def run_init(init: Callable[[jax.Array], Any], key: jax.Array) -> Any:
    """`init(key)` as one jitted program, compiled with `INIT_COMPILER_OPTIONS` on the CPU.

    `init` is e.g. `functools.partial(create_train_state, model, tx, image_shape=...,
    diffusion=...)`: jitted, XLA drops the forward pass whose output `model.init` discards.
    """
    options = INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return jax.jit(init).lower(key).compile(compiler_options=options)(key)
