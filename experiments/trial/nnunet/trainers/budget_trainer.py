"""`nnUNetTrainerStepBudget`: nnU-Net's default trainer with the budget of this project's grid.

nnU-Net builds its trainer from a class name and a fixed constructor signature (plans,
configuration, fold, dataset_json, device), so the budget comes in through the environment:
`DIFFSEG3D_NNUNET_BUDGET` = JSON `{"epochs", "iterations_per_epoch",
"val_iterations_per_epoch", "save_every"}` (`budget.Budget`, written by `pipeline.train`).
Unset, the trainer is nnU-Net's own (1000 x 250). Everything else (network, losses,
augmentation, learning-rate schedule over `num_epochs`, checkpoints) is nnU-Net's.

It also writes, in its output folder, `split_used.json` (the training and validation case ids
nnU-Net's own `do_split` returned, i.e. what it really trained and validated on) and, after
every epoch, `progress.json` (`PROGRESS`: epochs done, iterations done, the epoch's train and
validation loss and EMA pseudo Dice; replaced atomically), which the trial reads while nnU-Net
trains.

From the command line (nnU-Net's own CLI): `nnUNet_extTrainer=<this folder>
DIFFSEG3D_NNUNET_BUDGET='{"epochs": 3, ...}' nnUNetv2_train 1 3d_fullres 0
-tr nnUNetTrainerStepBudget`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from diffseg3d.experiments.trial.nnunet.trainer_contract import BUDGET_ENV, PROGRESS, SPLIT_USED
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

_ATTRIBUTES = {"epochs": "num_epochs", "iterations_per_epoch": "num_iterations_per_epoch",
               "val_iterations_per_epoch": "num_val_iterations_per_epoch",
               "save_every": "save_every"}


class nnUNetTrainerStepBudget(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming of trainers)
    """nnU-Net's trainer with `num_epochs`, `num_iterations_per_epoch`,
    `num_val_iterations_per_epoch` and `save_every` from `DIFFSEG3D_NNUNET_BUDGET`."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 (nnU-Net's own)
        super().__init__(plans, configuration, fold, dataset_json, device)
        budget = os.environ.get(BUDGET_ENV)
        if budget:  # before initialize(): the learning-rate schedule reads num_epochs
            for key, value in json.loads(budget).items():
                setattr(self, _ATTRIBUTES[key], int(value))

    def do_split(self):
        """nnU-Net's split (splits_final.json, fold `self.fold`), recorded as it was used."""
        train_keys, val_keys = super().do_split()
        if self.output_folder is not None:
            Path(self.output_folder).mkdir(parents=True, exist_ok=True)
            (Path(self.output_folder) / SPLIT_USED).write_text(json.dumps(
                {"fold": self.fold, "train": sorted(train_keys), "val": sorted(val_keys)},
                indent=2) + "\n")
        return train_keys, val_keys

    def on_epoch_end(self):
        """nnU-Net's epoch end (log, checkpoints, epoch + 1), then `PROGRESS` for the trial."""
        super().on_epoch_end()
        if self.local_rank != 0 or self.output_folder is None:
            return
        values = {key: self.logger.get_value(key, step=-1)
                  for key in ("train_losses", "val_losses", "ema_fg_dice")}
        progress = {"epoch": self.current_epoch, "epochs": self.num_epochs,
                    "iterations": self.current_epoch * self.num_iterations_per_epoch,
                    "train_loss": float(values["train_losses"]),
                    "val_loss": float(values["val_losses"]),
                    "ema_fg_dice": float(values["ema_fg_dice"]),
                    "checkpoint_latest": (Path(self.output_folder)
                                          / "checkpoint_latest.pth").is_file()}
        path = Path(self.output_folder) / PROGRESS
        partial = path.with_suffix(".json.partial")
        partial.write_text(json.dumps(progress) + "\n")
        os.replace(partial, path)
