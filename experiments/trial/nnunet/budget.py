"""nnU-Net's training budget in the grid's terms: epochs x iterations per epoch.

nnU-Net trains `num_epochs` epochs of `num_iterations_per_epoch` batches (1000 x 250 as
published) and validates `num_val_iterations_per_epoch` batches (50) after each. `steps` mode
gives it the grid's `train.steps` iterations at its own planned batch size: at most 250
iterations per epoch (nnU-Net's epoch, so its learning-rate decay, logging and checkpoints keep
their rhythm) and the fewest epochs whose equal epochs add up to exactly `train.steps` (within
twice the minimum number of epochs; otherwise rounded up, and `iterations` says by how much).
Validation batches keep nnU-Net's ratio of 1 per 5 training batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: nnU-Net v2's own schedule (`nnUNetTrainer.__init__`).
PUBLISHED_EPOCHS = 1000
PUBLISHED_ITERATIONS_PER_EPOCH = 250
PUBLISHED_VAL_ITERATIONS_PER_EPOCH = 50
#: nnU-Net's checkpoint_latest.pth interval (epochs); `steps` budgets save every epoch so a
#: resume loses at most one epoch.
PUBLISHED_SAVE_EVERY = 50
BUDGET_MODES = ("steps", "published")


@dataclass(frozen=True)
class Budget:
    """The trainer's schedule: `epochs` x `iterations_per_epoch` training batches, with
    `val_iterations_per_epoch` validation batches and checkpoint_latest.pth every
    `save_every` epochs."""

    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    save_every: int

    @property
    def iterations(self) -> int:
        """Training batches in all."""
        return self.epochs * self.iterations_per_epoch


def budget_for(mode: str, steps: int, iterations_per_epoch: int | None = None) -> Budget:
    """The `Budget` of `nnunet.budget` = `mode` for `train.steps` = `steps`; with
    `iterations_per_epoch` (`nnunet.iterations_per_epoch`, steps mode only) epochs of exactly
    that many iterations, as many as reach `steps` (rounded up to whole epochs)."""
    if mode == "published":
        return Budget(PUBLISHED_EPOCHS, PUBLISHED_ITERATIONS_PER_EPOCH,
                      PUBLISHED_VAL_ITERATIONS_PER_EPOCH, PUBLISHED_SAVE_EVERY)
    if mode != "steps":
        raise ValueError(f"nnunet.budget must be one of {BUDGET_MODES}, got {mode!r}")
    if steps < 1:
        raise ValueError(f"train.steps must be >= 1, got {steps}")
    ratio = PUBLISHED_ITERATIONS_PER_EPOCH // PUBLISHED_VAL_ITERATIONS_PER_EPOCH
    if iterations_per_epoch is not None:
        if iterations_per_epoch < 1:
            raise ValueError(f"nnunet.iterations_per_epoch must be >= 1, got "
                             f"{iterations_per_epoch}")
        return Budget(math.ceil(steps / iterations_per_epoch), iterations_per_epoch,
                      max(1, round(iterations_per_epoch / ratio)), 1)
    fewest = math.ceil(steps / PUBLISHED_ITERATIONS_PER_EPOCH)
    epochs = next((e for e in range(fewest, 2 * fewest + 1) if steps % e == 0), fewest)
    per_epoch = math.ceil(steps / epochs)
    return Budget(epochs, per_epoch, max(1, round(per_epoch / ratio)), 1)
