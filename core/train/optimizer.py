"""AdamW with linear warmup, cosine decay and global-norm gradient clipping (paper section 4).

The paper trains every model "with AdamW for 12500 steps and a warmup cosine learning rate
schedule"; ImgX-DiffSeg clips gradients by global norm before the optimiser, and so do we.
"""

from __future__ import annotations

from collections.abc import Callable

import optax


def make_lr_schedule(
    learning_rate: float, warmup_steps: int, total_steps: int, end_lr_ratio: float = 0.0
) -> Callable:
    """Learning rate at an optimiser step: 0 -> `learning_rate` linearly over `warmup_steps`,
    then cosine decay to `end_lr_ratio * learning_rate` at `total_steps` (constant after).

    lr(s) = peak * s / warmup                                   for s < warmup
    lr(s) = end + (peak - end) * (1 + cos(pi * (s - warmup) / (total - warmup))) / 2  after.
    """
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if warmup_steps < 0 or total_steps <= 0:
        raise ValueError(
            f"need warmup_steps >= 0 and total_steps > 0, got warmup_steps={warmup_steps}, "
            f"total_steps={total_steps}"
        )
    if warmup_steps >= total_steps:
        raise ValueError(
            f"warmup_steps ({warmup_steps}) must be smaller than total_steps ({total_steps})"
        )
    if not 0.0 <= end_lr_ratio <= 1.0:
        raise ValueError(f"end_lr_ratio must be in [0, 1], got {end_lr_ratio}")
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=learning_rate,
        warmup_steps=warmup_steps,
        # optax counts decay_steps from step 0, warmup included.
        decay_steps=total_steps,
        end_value=learning_rate * end_lr_ratio,
    )


def make_optimizer(
    learning_rate: float,
    warmup_steps: int,
    total_steps: int,
    weight_decay: float,
    grad_clip_norm: float,
    end_lr_ratio: float = 0.0,
) -> tuple[optax.GradientTransformation, Callable]:
    """AdamW on the warmup + cosine schedule, after clipping the gradients' global norm.

    Args:
      learning_rate: peak learning rate reached at the end of warmup.
      warmup_steps: linear warmup length in optimiser steps.
      total_steps: training length; the cosine reaches its end value here.
      weight_decay: decoupled AdamW weight decay (applied to every parameter).
      grad_clip_norm: clip gradients to this global L2 norm; <= 0 disables clipping.
      end_lr_ratio: final learning rate as a fraction of `learning_rate`.

    Returns:
      `(tx, lr_schedule)`: the optax transformation and the schedule `step -> lr`, so the train
      step can report the learning rate it used.
    """
    schedule = make_lr_schedule(learning_rate, warmup_steps, total_steps, end_lr_ratio)
    adamw = optax.adamw(learning_rate=schedule, weight_decay=weight_decay)
    if grad_clip_norm and grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), adamw)
    else:
        tx = adamw
    return tx, schedule
