"""A trial's checkpoint folders and the best validation that travels with them.

One fresh folder per checkpoint, which Ray Tune may copy away whole:
`<workdir>/checkpoints/step_0000100/` with `orbax/` (TrainState), `record.TRIAL_JSON`
(mlflow_run_id, step, config_hash, trial; with `eval.checkpoint: best_val` also best_step and
best_val_dice) and, once a validation has been best, its parameters as `record.BEST_PARAMS`.
The best so far is carried rather than re-derived, since older folders are deleted; so a resumed
trial scores the same parameters as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from diffseg3d.core.metrics.validation_selection import beats_best
from diffseg3d.core.train.checkpoint import save_checkpoint_folder
from diffseg3d.experiments.tracking import record
from diffseg3d.experiments.write_failure import no_room_errno, no_room_reason

#: Local checkpoint folders kept (older ones are deleted; Ray Tune keeps its own copies).
KEEP_CHECKPOINTS = 2


class TrialError(RuntimeError):
    """A trial cannot start or resume (bad checkpoint folder, config mismatch, ...)."""


@dataclasses.dataclass
class BestValidation:
    """The validation with the best score so far (`eval.val_metric`; `val_dice` holds that
    score) under the tie rule `ties` (`eval.val_ties`: "earlier" keeps the first of equal
    scores, "later" takes the later; NaN never wins; `validation_selection.beats_best`) and a
    device copy of its parameters, for `eval.checkpoint: best_val`. When not `enabled` it never
    updates and adds nothing to trial.json. `step` 0 means none yet."""

    enabled: bool
    step: int = 0
    val_dice: float | None = None
    params: Any = None
    ties: str = "earlier"

    @classmethod
    def from_meta(cls, enabled: bool, meta: dict | None, ties: str = "earlier"
                  ) -> BestValidation:
        """The best so far as a checkpoint's trial.json records it (`meta` None: a fresh run)."""
        if not enabled:
            return cls(enabled=False, ties=ties)
        meta = meta or {}
        return cls(enabled=True, step=int(meta.get("best_step", 0)),
                   val_dice=meta.get("best_val_dice"), ties=ties)

    def restore_params(self, folder: str | os.PathLike, like) -> None:
        """Reads the best parameters from a checkpoint folder when it names a best step."""
        if self.step:
            self.params = read_params(Path(folder) / record.BEST_PARAMS, like)

    def update(self, step: int, val_dice: float, params) -> None:
        """Keeps `params` when the score `val_dice` beats the best so far under `ties`."""
        if self.enabled and beats_best(val_dice, self.val_dice, self.ties):
            self.step, self.val_dice = step, val_dice
            # A copy: the next train step donates (frees) the state's buffers.
            self.params = jax.tree_util.tree_map(jnp.copy, params)

    def info(self) -> dict:
        """The trial.json entries: `best_step`, `best_val_dice` (none when not enabled)."""
        return {"best_step": self.step, "best_val_dice": self.val_dice} if self.enabled else {}


def save_checkpoint(root: Path, state, info: dict, best_params) -> Path:
    """A fresh checkpoint folder (`save_checkpoint_folder`) with `info` as trial.json and, when
    given, the best-validation parameters as `record.BEST_PARAMS`.

    No room to write it (a full disk, a quota, a file-size limit) is a `TrialError` naming the
    folder; the half-written folder is removed and the older ones, deleted only after a
    complete save, are kept."""
    def write_best(directory: Path) -> None:  # before trial.json: its presence means complete
        leaves = jax.tree_util.tree_leaves(jax.device_get(best_params))
        np.savez(directory / record.BEST_PARAMS,
                 **{f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)})

    try:
        return save_checkpoint_folder(root, state, info=info, info_name=record.TRIAL_JSON,
                                      keep=KEEP_CHECKPOINTS,
                                      write_extra=None if best_params is None else write_best)
    except (OSError, ValueError) as err:  # orbax reports a failed write as a ValueError
        code = no_room_errno(err)
        if code is None:
            raise
        step = int(jax.device_get(state.step))
        folder = Path(root) / f"step_{step:07d}"  # `save_checkpoint_folder`'s name
        shutil.rmtree(folder, ignore_errors=True)
        complete = sorted(p for p in Path(root).glob("step_*") if (p / record.TRIAL_JSON).is_file())
        kept = (f"the previous checkpoint {complete[-1]} is kept" if complete
                else "no earlier checkpoint exists")
        raise TrialError(f"{folder}: cannot write the checkpoint of step {step}: "
                         f"{no_room_reason(code)}; {kept}") from None


def read_params(path: Path, like):
    """Parameters saved by `save_checkpoint` in the tree structure of `like` (arrays or shape
    structs), on the default device; a missing file or a leaf of another shape or dtype is a
    `TrialError` naming the file."""
    like_leaves, treedef = jax.tree_util.tree_flatten(like)
    if not path.is_file():
        raise TrialError(f"{path.parent}: {record.TRIAL_JSON} names a best_step but "
                         f"{path.name} is missing")
    with np.load(path) as data:
        leaves = [data[f"leaf_{i}"] for i in range(len(data.files))]
    for i, (have, want) in enumerate(itertools.zip_longest(leaves, like_leaves)):
        if have is None or want is None or have.shape != tuple(want.shape) \
                or have.dtype != want.dtype:
            raise TrialError(f"{path}: leaf {i} does not match the model's parameters")
    return jax.device_put(jax.tree_util.tree_unflatten(treedef, leaves))


def read_trial_json(directory: str | os.PathLike) -> dict:
    """`trial.json` of a checkpoint folder, with a clear error when absent or malformed."""
    path = Path(directory) / record.TRIAL_JSON
    if not path.is_file():
        raise TrialError(f"{directory}: not a trial checkpoint folder (no {record.TRIAL_JSON})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TrialError(f"{path}: not valid JSON ({err})") from None
    for key in record.TRIAL_JSON_REQUIRED_KEYS:
        if key not in meta:
            raise TrialError(f"{path}: missing key {key!r}")
    return meta
