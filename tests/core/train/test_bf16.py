"""bfloat16 compute path of the real U-Net (design card: "bfloat16 compute with float32
parameters"): a training step (recycling, remat) keeps float32 parameters, optimiser state and
metrics with a finite loss that is close to, but not bit-equal to, the float32 loss; the K-step
sampler runs in bfloat16 and returns an int32 label and a float32 trajectory in [-1, 1]."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion import make_schedule
from diffseg3d.core.infer import make_sampler
from diffseg3d.core.models.unet import UNet
from diffseg3d.core.train import METRIC_NAMES, create_train_state, make_optimizer
from diffseg3d.core.train.steps import make_loss_fn, make_train_step

# Its fixture compiles for several seconds: in make test, not in the edit-test loop.
pytestmark = pytest.mark.slow

NUM_CLASSES = 3
SPATIAL = (4, 4, 2)  # divisible by 2 for two levels
BATCH = 2


def _model(dtype):
    return UNet(num_classes=NUM_CLASSES, channels=(4, 8), num_res_blocks=1, remat=True,
                dtype=dtype)


def _batch():
    rng = np.random.default_rng(0)
    label = rng.integers(0, NUM_CLASSES, (BATCH, *SPATIAL)).astype(np.int32)
    image = label[..., None] + 0.3 * rng.standard_normal((BATCH, *SPATIAL, 1))
    return {"image": jnp.asarray(image, jnp.float32), "label": jnp.asarray(label)}


def _dtypes(tree):
    return {np.dtype(x.dtype) for x in jax.tree.leaves(tree)}


@pytest.fixture(scope="module")
def state_and_schedule():
    tx, lr = make_optimizer(1e-2, 1, 10, weight_decay=1e-4, grad_clip_norm=1.0)
    state = create_train_state(_model(jnp.bfloat16), tx, jax.random.key(0),
                               (BATCH, *SPATIAL, 1), diffusion=True)
    return tx, lr, state, make_schedule(1000, 5)


@pytest.mark.slow
def test_bf16_recycling_step_keeps_float32_params_and_metrics(state_and_schedule):
    tx, lr, state, schedule = state_and_schedule
    assert _dtypes(state.params) == {np.dtype(np.float32)}
    kw = dict(method="diffusion", schedule=schedule, output="x0", recycling=True)
    step = jax.jit(make_train_step(_model(jnp.bfloat16), tx, lr, **kw))
    batch, key = _batch(), jax.random.key(1)
    # two steps: the first has lr 0 (warmup from 0), the second must move the params
    mid, _ = step(state, batch, key)
    new, metrics = step(mid, batch, jax.random.key(2))

    assert _dtypes(new.params) == {np.dtype(np.float32)}
    assert _dtypes(new.opt_state) <= {np.dtype(np.float32), np.dtype(np.int32)}
    assert set(metrics) == set(METRIC_NAMES)
    for name, value in metrics.items():
        assert value.dtype == jnp.float32 and value.shape == (), name
        assert np.isfinite(float(value)), name
    assert float(metrics["lr"]) > 0
    moved = [not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(mid.params), jax.tree.leaves(new.params), strict=True)]
    assert all(moved)

    # The compute really is bfloat16: same params, same key, float32 model -> a loss that is
    # close (bf16 keeps ~3 significant digits) but not the same number.
    loss16 = jax.jit(make_loss_fn(_model(jnp.bfloat16), **kw))
    loss32 = jax.jit(make_loss_fn(_model(jnp.float32), **kw))
    value16, parts16 = loss16(state.params, batch["image"], batch["label"], key)
    value32, _ = loss32(state.params, batch["image"], batch["label"], key)
    assert value16.dtype == jnp.float32 and parts16["loss_ce"].dtype == jnp.float32
    assert float(value16) == pytest.approx(float(value32), rel=5e-2)
    assert float(value16) != float(value32)


def test_bf16_sampler_gives_int_labels_and_float32_trajectory(state_and_schedule):
    _, _, state, schedule = state_and_schedule
    image = _batch()["image"]
    key = jax.random.key(3)
    label16, traj16 = make_sampler(_model(jnp.bfloat16), schedule)(
        state.params, image, key, return_trajectory=True)
    _, traj32 = make_sampler(_model(jnp.float32), schedule)(
        state.params, image, key, return_trajectory=True)
    assert label16.dtype == jnp.int32 and label16.shape == (BATCH, *SPATIAL)
    assert traj16.dtype == jnp.float32 and traj16.shape == (5, BATCH, *SPATIAL, NUM_CLASSES)
    assert np.all(np.isfinite(traj16)) and np.all(np.abs(traj16) <= 1.0)
    np.testing.assert_array_equal(label16, np.argmax(traj16[-1], -1))
    # same chain (same key) in both precisions: close, not identical
    diff = float(np.max(np.abs(np.asarray(traj16) - np.asarray(traj32))))
    assert 0.0 < diff < 0.2
