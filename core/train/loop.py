"""The two pieces every training loop shares: the jitted step and the logging window.

The loop itself is written out where it runs (`experiments/trial/run.py: run_trial`, in the manner
of big_vision's `train.py`): step s (counting from 0) is

    state, metrics = step_fn(state, batch_s, jax.random.fold_in(key, s))

with batch s depending only on (seed, s) (`data.loader.batch_iterator`), so a run resumed from a
checkpoint at step s draws the same batches and random numbers as an uninterrupted one. Metrics
stay on the device until a window of steps is logged, so the host never blocks the device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

TrainStep = Callable[[Any, dict, jax.Array], tuple[Any, dict]]


def compile_train_step(train_step: TrainStep) -> Callable:
    """`jax.jit` of a pure `(state, batch, key) -> (state, metrics)` step
    (`steps.make_train_step`) with the state (argument 0) donated, so XLA updates the
    parameters in place; the caller must not reuse a state it passed in."""
    return jax.jit(train_step, donate_argnums=0)


def window_means(window: Sequence[dict]) -> dict[str, float]:
    """Host floats for a logging window of per-step metrics (device scalars): the mean of each
    metric over the window, except `lr`, which is the value at the window's last step (a mean
    of a schedule is not a schedule)."""
    if not window:
        raise ValueError("window_means of an empty window")
    stacked = jax.device_get(list(window))
    summary = {
        name: float(np.mean([m[name] for m in stacked], dtype=np.float64)) for name in stacked[0]
    }
    if "lr" in stacked[-1]:
        summary["lr"] = float(stacked[-1]["lr"])
    return summary
