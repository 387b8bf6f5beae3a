"""What a trial cost: FLOPs of its compiled programs, wall times and the inference cost per case.

- `step_flops(step_fn, state, batch, key)`: FLOPs of one execution of the trial's jitted train
  step (`core.cost.flops.compiled_flops`: the larger of XLA's cost analysis and the count from
  the convolution and dot shapes of the optimized HLO, which XLA:GPU's analysis leaves out for
  cuDNN / cuBLAS calls). Lowered and compiled with the step's own arguments, so the call that
  follows reuses the executable instead of compiling again.
- `forward_flops(model, params, image_shape, num_classes)`: FLOPs of one forward pass of the
  network on ONE case (batch 1), compiled for this purpose (a forward pass only, seconds on a
  CPU at quick-profile sizes).
- `trial_cost(...)`: the `record.COST_METRICS` of a trial. A U-Net case costs one forward pass;
  a diffusion sample K = `diffusion.sample_steps` passes, an N-sample ensemble N K. Measured
  seconds per case come from `timed` re-runs of an already compiled batch (no compile time).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from diffseg3d.core.cost.flops import compiled_flops


def step_flops(step_fn: Any, *args: Any) -> float:
    """`flops` of `step_fn` (a `jax.jit` function) compiled for `args`; NaN if XLA cannot say."""
    try:
        return float(compiled_flops(step_fn.lower(*args).compile())["flops"])
    except Exception:  # a backend without an HLO text or cost analysis: the trial goes on
        return math.nan


def forward_flops(model: Any, params: Any, image_shape: tuple[int, ...], num_classes: int
                  ) -> float:
    """FLOPs of one forward pass of `model` on one case: image (1, *S, 1) and, for a diffusion
    network, a noisy mask (1, *S, C) and a time (1,)."""
    image = jax.ShapeDtypeStruct((1, *image_shape, 1), jnp.float32)
    if model.diffusion:
        mask = jax.ShapeDtypeStruct((1, *image_shape, num_classes), jnp.float32)
        time_input = jax.ShapeDtypeStruct((1,), jnp.float32)
        fn = jax.jit(lambda p, x, m, t: model.apply({"params": p}, x, m, t))
        args = (params, image, mask, time_input)
    else:
        fn = jax.jit(lambda p, x: model.apply({"params": p}, x))
        args = (params, image)
    return step_flops(fn, *args)


def timed(fn: Callable, *args: Any, warm: bool = False) -> float:
    """Seconds of one call of an already compiled `fn`, waiting for its result; `warm`: call it
    once first (it may not be compiled yet)."""
    if warm:
        jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def trial_cost(*, train_step_flops: float, steps_run: int, train_seconds: float,
               eval_seconds: float, forward: float, passes_per_sample: int, samples: int,
               seconds_per_case_1: float, seconds_per_case_ensemble: float) -> dict[str, float]:
    """`record.COST_METRICS`: FLOPs per train step and over the `steps_run` steps trained,
    wall times, the forward pass's FLOPs per case, and the inference FLOPs (passes x forward)
    and measured seconds per case of one sample and of the `samples`-sample ensemble (1 for a
    U-Net or without an ensemble: the same numbers)."""
    per_sample = passes_per_sample * forward
    return {
        "cost_train_step_flops": train_step_flops,
        "cost_train_flops": train_step_flops * steps_run,
        "cost_train_seconds": train_seconds, "cost_eval_seconds": eval_seconds,
        "cost_forward_flops": forward, "cost_forward_passes": float(passes_per_sample),
        "cost_inference_flops_1": per_sample, "cost_inference_seconds_1": seconds_per_case_1,
        "cost_inference_samples": float(samples),
        "cost_inference_flops_ensemble": samples * per_sample,
        "cost_inference_seconds_ensemble": seconds_per_case_ensemble,
    }
