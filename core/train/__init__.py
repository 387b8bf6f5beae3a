"""diffseg3d.core.train: optimiser, train state, pure train steps (U-Net, diffusion, recycling),
data-parallel sharding, orbax checkpoints and the pieces of the training loop."""

from diffseg3d.core.train.checkpoint import (
    CheckpointError,
    latest_checkpoint_step,
    restore_checkpoint,
    save_checkpoint,
)
from diffseg3d.core.train.loop import compile_train_step, window_means
from diffseg3d.core.train.optimizer import make_lr_schedule, make_optimizer
from diffseg3d.core.train.sharding import make_mesh, replicate, shard_batch, shard_batches
from diffseg3d.core.train.state import TrainState, create_train_state
from diffseg3d.core.train.steps import METRIC_NAMES, make_loss_fn, make_train_step

__all__ = [
    "METRIC_NAMES",
    "CheckpointError",
    "TrainState",
    "compile_train_step",
    "create_train_state",
    "latest_checkpoint_step",
    "make_loss_fn",
    "make_lr_schedule",
    "make_mesh",
    "make_optimizer",
    "make_train_step",
    "replicate",
    "restore_checkpoint",
    "save_checkpoint",
    "shard_batch",
    "shard_batches",
    "window_means",
]
