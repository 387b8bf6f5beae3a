"""What the project's nnU-Net trainer (`trainers.budget_trainer`) and the trial (`trial`,
`pipeline`) agree on: the trainer's name, the environment variable carrying the budget, and
the files the trainer writes in nnU-Net's fold folder. Standard library only: the trainer module
imports it inside nnU-Net's processes."""

#: The trainer class nnU-Net is told to use (`-tr`).
TRAINER = "nnUNetTrainerStepBudget"
#: JSON `{"epochs", "iterations_per_epoch", "val_iterations_per_epoch", "save_every"}`
#: (`budget.Budget`); unset: nnU-Net's published schedule.
BUDGET_ENV = "DIFFSEG3D_NNUNET_BUDGET"
#: `{"fold", "train", "val"}`: the case ids nnU-Net's `do_split` returned.
SPLIT_USED = "split_used.json"
#: `{"epoch", "epochs", "iterations", "train_loss", "val_loss", "ema_fg_dice",
#: "checkpoint_latest"}` after each epoch, replaced atomically.
PROGRESS = "progress.json"
