"""The training loop: jit once, step, log every few steps, checkpoint every few steps.

Works without Ray or MLflow; the experiment runner plugs those in through the callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np

TrainStep = Callable[[Any, dict, jax.Array], tuple[Any, dict]]


def compile_train_step(train_step: TrainStep) -> Callable:
    """`jax.jit` with the state (argument 0) donated, so XLA updates params in place."""
    return jax.jit(train_step, donate_argnums=0)


def _window_summary(window: list[dict]) -> dict[str, float]:
    """Host floats for a logging window: the mean of each metric over the window, except `lr`,
    which is the value at the window's last step (a mean of a schedule is not a schedule)."""
    stacked = jax.device_get(window)
    summary = {
        name: float(np.mean([m[name] for m in stacked], dtype=np.float64)) for name in stacked[0]
    }
    if "lr" in stacked[-1]:
        summary["lr"] = float(stacked[-1]["lr"])
    return summary


def fit(
    train_step: TrainStep,
    state: Any,
    batches: Iterator[dict],
    key: jax.Array,
    num_steps: int,
    *,
    on_metrics: Callable[[int, dict[str, float]], None] | None = None,
    on_checkpoint: Callable[[int, Any], None] | None = None,
    checkpoint_every: int = 0,
    log_every: int = 10,
) -> Any:
    """Train from `state.step` up to `num_steps` total optimiser steps and return the final state.

    Args:
      train_step: pure `(state, batch, key) -> (state, metrics)` (see `steps.make_train_step`);
        jitted here once with the state donated, so the caller must not reuse the `state` it
        passed in. An already-jitted function is accepted as well.
      state: a `TrainState`; its `step` says where training resumes.
      batches: iterator of batches `{"image": (B, *S, 1), "label": (B, *S)}`, already positioned
        at `state.step` (`data.loader.batch_iterator(..., start_step=state.step)`), optionally
        already on a device mesh (`sharding.shard_batch`).
      key: the run's base key; step s uses `jax.random.fold_in(key, s)`, so a resumed run draws
        the same random numbers as an uninterrupted one.
      num_steps: total number of steps of the run (not steps to add).
      on_metrics: `(step, metrics)` called every `log_every` steps (and at the end) with the
        mean of each metric over the steps since the last call (`lr` at `step`); `step` counts
        completed steps. Metrics stay on device in between, so the host never blocks the device.
      on_checkpoint: `(step, state)` called after every `checkpoint_every` steps (0: never); it
        must finish with the state (e.g. a synchronous save) before returning, since the next
        step reuses the state's buffers.
      log_every: logging period in steps (>= 1).
    """
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    if checkpoint_every < 0:
        raise ValueError(f"checkpoint_every must be >= 0, got {checkpoint_every}")
    step_fn = train_step if hasattr(train_step, "lower") else compile_train_step(train_step)
    step = int(jax.device_get(state.step))
    if step > num_steps:
        raise ValueError(f"state is at step {step}, past num_steps={num_steps}")
    window: list[dict] = []
    while step < num_steps:
        try:
            batch = next(batches)
        except StopIteration as err:
            raise ValueError(
                f"batches ran out at step {step} before num_steps={num_steps}"
            ) from err
        state, metrics = step_fn(state, batch, jax.random.fold_in(key, step))
        step += 1
        window.append(metrics)
        if step % log_every == 0 or step == num_steps:
            if on_metrics is not None:
                on_metrics(step, _window_summary(window))
            window = []
        if on_checkpoint is not None and checkpoint_every and step % checkpoint_every == 0:
            on_checkpoint(step, state)
    return state
