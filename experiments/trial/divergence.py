"""Stopping a diverging trial: a non-finite loss or gradient norm ends it
(`train.stop_on_nonfinite`).

The check rides on the logging window (`core.train.loop.window_means`), so it costs no extra
host-device synchronisation: the window's means are finite exactly when every step's `loss` and
`grad_norm` are (a sum of finite float64 values of float32 metrics cannot overflow), and only a
non-finite mean fetches the window's per-step values to name the first bad step. A window is
logged before any validation or checkpoint of its last step (`trial.run`), so the trial stops
before a checkpoint of non-finite training is written: the folders already saved, the last
finite ones, are kept, and a resume from them would diverge again.

The error is deterministic (same seed, same data, same steps), so the Ray trainable does not let
Tune retry it (`cluster.trainable.train_trial`): a retry would spend the same hours to diverge at
the same step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import jax

#: Per-step metrics whose non-finite value stops the trial.
WATCHED = ("loss", "grad_norm")


class NonFiniteTrainingError(RuntimeError):
    """Training produced a non-finite loss or gradient norm; the message names the step and the
    loss parts. Not retried by Ray Tune (deterministic)."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def window_is_finite(means: Mapping[str, float]) -> bool:
    """True when the logged means of the `WATCHED` metrics are finite (absent ones count as
    finite)."""
    return all(math.isfinite(means[k]) for k in WATCHED if k in means)


def first_nonfinite(window: Sequence[Mapping], first_step: int) -> tuple[int, dict[str, float]]:
    """(step, host metrics) of the first step of `window` (per-step device metrics, the first
    being step `first_step`) with a non-finite `WATCHED` value; `ValueError` when there is none."""
    for offset, metrics in enumerate(jax.device_get(list(window))):
        values = {k: float(v) for k, v in metrics.items()}
        if not window_is_finite(values):
            return first_step + offset, values
    raise ValueError("first_nonfinite: every step of the window is finite")


def nonfinite_message(trial: str, step: int, metrics: Mapping[str, float],
                      kept: Path | None) -> str:
    """`trial t: non-finite training at step 3: loss=nan, ... ; stopped ...; last checkpoint
    <folder>` (`kept` None: none was saved)."""
    parts = ", ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items()))
    where = (f"the last checkpoint, {kept}, is kept" if kept is not None
             else "no checkpoint was saved")
    return (f"trial {trial}: non-finite training at step {step}: {parts}. Stopped "
            f"(train.stop_on_nonfinite); {where}. The run diverged: lower optim.learning_rate "
            "or raise optim.warmup_steps / optim.grad_clip_norm")


def check_window(window: Sequence[Mapping], means: Mapping[str, float], last_step: int,
                 trial: str, kept: Path | None) -> None:
    """Raise `NonFiniteTrainingError` when the logging window ending at step `last_step`
    (`means` its `window_means`) holds a non-finite loss or gradient norm."""
    if window_is_finite(means):
        return
    step, metrics = first_nonfinite(window, last_step - len(window) + 1)
    raise NonFiniteTrainingError(nonfinite_message(trial, step, metrics, kept), step)
