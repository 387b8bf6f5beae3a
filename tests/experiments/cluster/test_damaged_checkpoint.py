"""A trial's newest checkpoint damaged before the rerun (its largest file cut in half): the
restarted trial resumes from the previous intact checkpoint, and one line says which folder was
damaged, how, and which one is resumed instead. Real orbax checkpoint folders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.train.checkpoint import FOLDER_STATE, damaged_file, restore_checkpoint
from diffseg3d.core.train.state import TrainState
from diffseg3d.experiments.cluster.trainable import newest_checkpoint
from diffseg3d.experiments.trial.checkpoint import read_trial_json, save_checkpoint

INFO = {"mlflow_run_id": "run", "config_hash": "hash", "trial": "t"}


def _state(step):
    w = jax.random.normal(jax.random.PRNGKey(step), (50_000,))  # 200 kB, one large file
    return TrainState(step=jnp.array(step, jnp.int32), params={"w": w}, opt_state=())


@pytest.fixture
def two_checkpoints(tmp_path):
    root = tmp_path / "checkpoints"
    return [save_checkpoint(root, _state(step), INFO, None) for step in (2, 4)]


def test_a_cut_newest_checkpoint_is_skipped_for_the_previous_one(two_checkpoints, capsys):
    older, newer = two_checkpoints
    assert newest_checkpoint([older, newer], "hash") == newer
    assert capsys.readouterr().err == ""
    largest = max((p for p in newer.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    size = largest.stat().st_size
    largest.write_bytes(largest.read_bytes()[: size // 2])  # cut short after the save

    assert newest_checkpoint([older, newer], "hash") == older
    name = largest.relative_to(newer).as_posix()
    assert capsys.readouterr().err.strip() == (
        f"checkpoint {newer} (step 4) is damaged ({name}: {size // 2} of {size} bytes); "
        f"resuming from {older} (step 2) instead")
    # What is resumed restores: the older folder's state, exactly.
    target = jax.eval_shape(lambda: _state(2))
    state, _ = restore_checkpoint(older / FOLDER_STATE, target)
    assert int(state.step) == 2
    np.testing.assert_array_equal(np.asarray(state.params["w"]), np.asarray(_state(2).params["w"]))


def test_with_no_intact_checkpoint_left_the_trial_starts_afresh(two_checkpoints, capsys):
    older, newer = two_checkpoints
    for folder in (older, newer):
        next(p for p in (folder / FOLDER_STATE).rglob("*") if p.is_file()).unlink()
    assert newest_checkpoint([older, newer], "hash") is None
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(": missing); no intact checkpoint is left: the trial starts "
                                   "afresh" in line for line in lines)


def test_folders_saved_before_sizes_were_recorded_still_resume(two_checkpoints):
    older, newer = two_checkpoints
    meta = read_trial_json(newer)
    assert damaged_file(newer, meta) is None
    # Every file of the state is recorded (trial.json itself is written after the record).
    assert meta["files"] and all(name.startswith(f"{FOLDER_STATE}/") for name in meta["files"])
    legacy = {k: v for k, v in meta.items() if k != "files"}
    assert damaged_file(newer, legacy) is None
