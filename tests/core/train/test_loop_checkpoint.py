"""The loop's pieces and the checkpoints: one compile, window means, fold_in(key, step) +
orbax resume is bit-for-bit, checkpoint folders are pruned, incompatible or missing checkpoints
fail with the directory in the message. (The trial's loop itself:
tests/experiments/trial/test_run.py.)
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion import make_schedule
from diffseg3d.core.train import (
    CheckpointError,
    compile_train_step,
    create_train_state,
    latest_checkpoint_step,
    make_optimizer,
    make_train_step,
    restore_checkpoint,
    save_checkpoint,
    window_means,
)
from diffseg3d.core.train.checkpoint import (
    FOLDER_STATE,
    file_sizes,
    params_digest,
    save_checkpoint_folder,
)

from tests.core.train.tiny_model import TinyDenoiser

SHAPE = (2, 8, 8, 4)
NUM_CLASSES = 3
TOTAL = 6


def _model(features=8):
    return TinyDenoiser(num_classes=NUM_CLASSES, features=features)


def _batch_at(i):
    """Batch i depends only on i, like data.loader.batch_iterator(seed, start_step)."""
    rng = np.random.default_rng(1000 + i)
    label = rng.integers(0, NUM_CLASSES, SHAPE).astype(np.int32)
    image = (label[..., None] + 0.5 * rng.standard_normal((*SHAPE, 1))).astype(np.float32)
    return {"image": image, "label": label}


def _batches(start):
    i = start
    while True:
        yield _batch_at(i)
        i += 1


def _optimizer():
    return make_optimizer(1e-2, 2, TOTAL, weight_decay=1e-4, grad_clip_norm=1.0)


@functools.cache
def _step():
    """The pure step; recycling draws k and two noises and runs the model twice, so the test
    also checks that the random stream resumes."""
    tx, lr = _optimizer()
    return make_train_step(_model(), tx, lr, method="diffusion",
                           schedule=make_schedule(1000, 5), recycling=True)


@functools.cache
def _jitted_step():
    return compile_train_step(_step())  # compiled once for the whole module


def _setup(init_seed=0):
    state = create_train_state(_model(), _optimizer()[0], jax.random.key(init_seed),
                               (*SHAPE, 1), diffusion=True)
    return state, _jitted_step()


def _leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def _train(step_fn, state, key, stop, losses, on_step=None):
    """The loop of `experiments/trial/run.py` without logging: step s (from 0) gets batch s and
    fold_in(key, s); `on_step(completed, state)` after each step."""
    for s in range(int(state.step), stop):
        state, metrics = step_fn(state, _batch_at(s), jax.random.fold_in(key, s))
        losses.append((s + 1, float(metrics["loss"])))
        if on_step is not None:
            on_step(s + 1, state)
    return state


@pytest.mark.slow
def test_resume_from_checkpoint_is_bit_for_bit(tmp_path):
    key = jax.random.key(42)
    losses_full, losses_resumed, saved = [], [], []
    state, step = _setup()
    full = _train(step, state, key, TOTAL, losses_full)

    def checkpoint(completed, st):
        if completed == TOTAL // 2:
            saved.append(save_checkpoint(tmp_path, st, {"seed": 42}))

    state, step = _setup()
    _train(step, state, key, TOTAL // 2, losses_resumed, on_step=checkpoint)
    assert saved == [TOTAL // 2] and latest_checkpoint_step(tmp_path) == TOTAL // 2

    # "fresh process": new jitted step and a target state from a different init seed
    target, step = _setup(init_seed=123)
    # restore into an abstract target (shapes/dtypes only), as a resumed trial does
    abstract = jax.eval_shape(lambda: _setup(init_seed=123)[0])
    assert isinstance(jax.tree.leaves(abstract)[0], jax.ShapeDtypeStruct)
    restored, meta = restore_checkpoint(tmp_path, abstract)
    assert meta == {"seed": 42, "step": TOTAL // 2}
    assert int(restored.step) == TOTAL // 2
    resumed = _train(step, restored, key, TOTAL, losses_resumed)

    assert [s for s, _ in losses_resumed] == list(range(1, TOTAL + 1))
    assert losses_resumed == losses_full  # exact floats
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert params_digest(full.params) == params_digest(resumed.params)
    # and the run did move: a different init is not silently what we compared
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(full), _leaves(target),
                                                        strict=True))
    assert params_digest(full.params) != params_digest(target.params)


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
def test_step_compiles_once_and_window_means_by_hand():
    state, _ = _setup()
    traces = []

    def counted(state, batch, key):
        traces.append(1)  # runs only while tracing
        return _step()(state, batch, key)

    step_fn, key, per_step = compile_train_step(counted), jax.random.key(0), []
    for s in range(3):
        state, metrics = step_fn(state, _batch_at(s), jax.random.fold_in(key, s))
        per_step.append(metrics)
    assert len(traces) == 1
    host = [{k: float(v) for k, v in m.items()} for m in per_step]
    means = window_means(per_step)
    assert means["loss"] == pytest.approx((host[0]["loss"] + host[1]["loss"] + host[2]["loss"]) / 3)
    assert means["grad_norm"] == pytest.approx(sum(h["grad_norm"] for h in host) / 3)
    assert means["lr"] == host[2]["lr"] != host[0]["lr"]  # the last step's rate, not a mean
    assert all(isinstance(v, float) for v in means.values())
    with pytest.raises(ValueError, match="empty"):
        window_means([])


def test_checkpoint_folders_hold_info_and_keep_the_newest(tmp_path):
    state, step = _setup()
    key, folders = jax.random.key(0), []
    _train(step, state, key, 3, [], on_step=lambda s, st: folders.append(
        save_checkpoint_folder(tmp_path, st, {"run": "r1"}, info_name="trial.json", keep=2)))
    assert [f.name for f in folders] == ["step_0000001", "step_0000002", "step_0000003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_0000002", "step_0000003"]
    info = json.loads((folders[-1] / "trial.json").read_text())
    # Every file of the folder but trial.json itself (written after the record), with its size.
    state_files = {k: v for k, v in file_sizes(folders[-1]).items() if k != "trial.json"}
    assert state_files and info == {"run": "r1", "step": 3, "files": state_files}
    target = jax.eval_shape(lambda: _setup()[0])
    restored, meta = restore_checkpoint(folders[-1] / FOLDER_STATE, target)
    assert int(restored.step) == 3 and meta == {"step": 3}
    with pytest.raises(ValueError, match="keep"):
        save_checkpoint_folder(tmp_path, restored, {}, info_name="x.json", keep=0)


@pytest.mark.slow
def test_restore_errors_name_the_directory(tmp_path):
    state, _ = _setup()
    missing = tmp_path / "nowhere"
    with pytest.raises(CheckpointError, match=str(missing)):
        restore_checkpoint(missing, state)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=f"{empty}.*no checkpoint"):
        restore_checkpoint(empty, state)
    save_checkpoint(tmp_path / "ck", state)
    other = create_train_state(_model(features=16), _optimizer()[0], jax.random.key(0),
                               (*SHAPE, 1), diffusion=True)
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'ck'}.*expects"):
        restore_checkpoint(tmp_path / "ck", other)
    as_bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16) if x.dtype == jnp.float32 else x,
                           state)
    with pytest.raises(CheckpointError, match="bfloat16"):
        restore_checkpoint(tmp_path / "ck", as_bf16)


def test_extra_files_come_before_the_info_json_so_a_killed_save_looks_incomplete(tmp_path):
    state, _ = _setup()
    seen = []

    def extra(folder):
        seen.append(((folder / "trial.json").exists(), (folder / FOLDER_STATE).is_dir()))
        (folder / "best.npz").write_bytes(b"x")

    folder = save_checkpoint_folder(tmp_path, state, {"run": "r"}, info_name="trial.json", keep=1,
                                    write_extra=extra)
    assert seen == [(False, True)] and (folder / "best.npz").is_file()
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted([FOLDER_STATE, "best.npz", "trial.json"])

    def killed(folder):
        raise KeyboardInterrupt  # the process dies while writing the extra files

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint_folder(tmp_path / "b", state, {"run": "r"}, info_name="trial.json",
                               keep=1, write_extra=killed)
    assert not list((tmp_path / "b").glob("step_*/trial.json"))
