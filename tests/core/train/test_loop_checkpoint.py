"""fit(): one compile, fold_in(key, step), logging windows, checkpoint cadence; orbax resume is
bit-for-bit; incompatible or missing checkpoints fail with the directory in the message."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion import make_schedule
from diffseg3d.core.train import (
    CheckpointError,
    compile_train_step,
    create_train_state,
    fit,
    latest_checkpoint_step,
    make_optimizer,
    make_train_step,
    restore_checkpoint,
    save_checkpoint,
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


def test_resume_from_checkpoint_is_bit_for_bit(tmp_path):
    key = jax.random.key(42)
    losses_full = []
    state, step = _setup()
    full = fit(step, state, _batches(0), key, TOTAL, log_every=1,
               on_metrics=lambda s, m: losses_full.append((s, m["loss"])))

    losses_resumed = []
    log = lambda s, m: losses_resumed.append((s, m["loss"]))
    state, step = _setup()
    saved = []
    fit(step, state, _batches(0), key, TOTAL // 2, log_every=1, on_metrics=log,
        checkpoint_every=TOTAL // 2,
        on_checkpoint=lambda s, st: saved.append(save_checkpoint(tmp_path, st, {"seed": 42})))
    assert saved == [TOTAL // 2] and latest_checkpoint_step(tmp_path) == TOTAL // 2

    # "fresh process": new jitted step and a target state from a different init seed
    target, step = _setup(init_seed=123)
    # restore into an abstract target (shapes/dtypes only), as a resumed trial does
    abstract = jax.eval_shape(lambda: _setup(init_seed=123)[0])
    assert isinstance(jax.tree.leaves(abstract)[0], jax.ShapeDtypeStruct)
    restored, meta = restore_checkpoint(tmp_path, abstract)
    assert meta == {"seed": 42, "step": TOTAL // 2}
    assert int(restored.step) == TOTAL // 2
    resumed = fit(step, restored, _batches(int(restored.step)), key, TOTAL, log_every=1,
                  on_metrics=log)

    assert [s for s, _ in losses_resumed] == list(range(1, TOTAL + 1))
    assert losses_resumed == losses_full  # exact floats
    for a, b in zip(_leaves(full), _leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    # and the run did move: a different init is not silently what we compared
    assert not all(np.array_equal(a, b) for a, b in zip(_leaves(full), _leaves(target),
                                                        strict=True))


def test_fit_compiles_once_and_logs_window_means():
    state, step = _setup()
    traces = []

    def counted(state, batch, key):
        traces.append(1)  # runs only while tracing
        return _step()(state, batch, key)

    per_step, windows, checkpoints = [], [], []
    key = jax.random.key(0)
    fit(counted, state, _batches(0), key, 5, log_every=1,
        on_metrics=lambda s, m: per_step.append(m))
    assert len(traces) == 1
    state, _ = _setup()
    fit(step, state, _batches(0), key, 5, log_every=2,
        on_metrics=lambda s, m: windows.append((s, m)),
        on_checkpoint=lambda s, st: checkpoints.append((s, int(st.step))), checkpoint_every=2)
    assert [s for s, _ in windows] == [2, 4, 5]
    assert checkpoints == [(2, 2), (4, 4)]
    losses = [m["loss"] for m in per_step]
    assert windows[0][1]["loss"] == pytest.approx(np.mean(losses[0:2]), rel=1e-6)
    assert windows[1][1]["loss"] == pytest.approx(np.mean(losses[2:4]), rel=1e-6)
    assert windows[2][1]["loss"] == pytest.approx(losses[4], rel=1e-6)
    assert windows[1][1]["lr"] == pytest.approx(per_step[3]["lr"], rel=1e-6)


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
