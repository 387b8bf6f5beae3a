"""Gradient accumulation (`train.grad_accum_steps`): M microbatches in one jitted step, one
optimiser update, the full-batch update for the paper's per-example-mean losses.

Tolerance of the equality tests: with SGD at learning rate 1 the update is exactly -grad, so
`params - new_params` is the gradient. The accumulated and the full-batch step add the same
per-voxel float32 terms in another order (per microbatch, then over microbatches); each
gradient entry is a sum of at most B * voxels = 8 * 256 = 2048 terms of size <= 1, so the
difference is a few float32 roundings of numbers of size <= 1: observed <= 1.2e-7 (one ulp at
1.0). We allow atol 1e-6 + rtol 1e-5. A real accumulation error is far larger: a gradient summed
instead of averaged is off by a factor M, and the gradient of one microbatch differs from the
full-batch one by more than 1e-3 (checked below, so the tolerance can fail).
"""

import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from diffseg3d.core.data.augment import random_affine
from diffseg3d.core.diffusion import make_schedule
from diffseg3d.core.train.optimizer import make_optimizer
from diffseg3d.core.train.state import create_train_state
from diffseg3d.core.train.steps import (
    METRIC_NAMES,
    accumulate_gradients,
    make_loss_fn,
    make_train_step,
    split_microbatches,
)

from tests.core.train.tiny_model import TinyDenoiser

# Accumulated vs full-batch updates are compared at 1e-6: on a GPU that needs full float32
# convs and matmuls, not TF32 (tests/core/conftest.py).
pytestmark = pytest.mark.usefixtures("highest_precision")

B, SPATIAL, NUM_CLASSES = 8, (8, 8, 4), 3
ATOL, RTOL = 1e-6, 1e-5


def _batch(batch_size=B, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, NUM_CLASSES, (batch_size, *SPATIAL)).astype(np.int32)
    noise = 0.5 * rng.standard_normal((batch_size, *SPATIAL, 1))
    image = (label[..., None] + noise).astype(np.float32)
    return {"image": jnp.asarray(image), "label": jnp.asarray(label)}


def _run(model, tx, lr, batch, key, **kw):
    """(old params, new state, metrics) of one jitted step from a fresh state."""
    state = create_train_state(model, tx, jax.random.key(0), batch["image"].shape,
                               diffusion=model.diffusion)
    old = state.params
    new, metrics = jax.jit(make_train_step(model, tx, lr, **kw))(state, batch, key)
    return old, new, jax.device_get(metrics)


def _assert_trees_close(a, b, atol=ATOL, rtol=RTOL):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol)


def _max_abs_diff(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def test_microbatches_are_strided_so_a_sharded_batch_stays_spread():
    x = jnp.arange(8)
    np.testing.assert_array_equal(split_microbatches(x, 2), [[0, 2, 4, 6], [1, 3, 5, 7]])
    np.testing.assert_array_equal(split_microbatches(x, 4), [[0, 4], [1, 5], [2, 6], [3, 7]])
    np.testing.assert_array_equal(split_microbatches(x, 1), [x])
    image = jnp.arange(8 * 3).reshape(8, 3)
    assert split_microbatches(image, 4).shape == (4, 2, 3)
    np.testing.assert_array_equal(split_microbatches(image, 4)[1], image[1::4])


@pytest.mark.slow
@pytest.mark.parametrize("use_dice", [True, False])
def test_unet_update_and_metrics_equal_the_full_batch_step(use_dice):
    """CE and the per-example foreground Dice are per-example means: with 2 and 4 microbatches
    the accumulated update is the full-batch update (SGD at lr 1: new = old - grad)."""
    model = TinyDenoiser(num_classes=NUM_CLASSES, diffusion=False)
    tx, lr = optax.sgd(1.0), (lambda s: 1.0)
    batch, key = _batch(), jax.random.key(1)
    kw = dict(method="unet", use_dice=use_dice)
    old, full, m_full = _run(model, tx, lr, batch, key, **kw)
    assert _max_abs_diff(full.params, old) > 1e-2  # the step moved the parameters
    for steps in (2, 4):
        _, acc, m_acc = _run(model, tx, lr, batch, key, grad_accum_steps=steps, **kw)
        _assert_trees_close(acc.params, full.params)
        assert set(m_acc) == set(METRIC_NAMES)
        for name in METRIC_NAMES:
            np.testing.assert_allclose(m_acc[name], m_full[name], atol=ATOL, rtol=RTOL,
                                       err_msg=f"{name}, grad_accum_steps {steps}")
        assert int(acc.step) == 1
    # The tolerance can fail: one microbatch's gradient is not the batch's.
    half = {k: v[::2] for k, v in batch.items()}
    _, on_half, _ = _run(model, tx, lr, half, key, **kw)
    assert _max_abs_diff(on_half.params, full.params) > 1e-3


@pytest.mark.slow
def test_the_project_optimizer_makes_one_update_of_the_batch():
    """AdamW after global-norm clipping (make_optimizer): the clip sees the averaged gradient
    and the optimiser counts one step, whatever the number of microbatches."""
    model = TinyDenoiser(num_classes=NUM_CLASSES, diffusion=False)
    tx, lr = make_optimizer(1e-2, 0, 10, weight_decay=1e-4, grad_clip_norm=1.0)
    batch, key = _batch(), jax.random.key(1)
    _, full, m_full = _run(model, tx, lr, batch, key, method="unet")
    _, acc, m_acc = _run(model, tx, lr, batch, key, method="unet", grad_accum_steps=4)
    counts = [int(leaf) for leaf in jax.tree.leaves(acc.opt_state) if np.ndim(leaf) == 0]
    assert counts and set(counts) == {1}  # adam's and the schedule's step counters
    _assert_trees_close(acc.params, full.params)
    assert m_full["grad_norm"] > 1.0  # so the clipping was active
    np.testing.assert_allclose(m_acc["grad_norm"], m_full["grad_norm"], rtol=RTOL)


@pytest.mark.slow
def test_augmentation_is_per_example_as_in_the_full_batch_step():
    """The batch is augmented before it is cut, so each volume gets the same warp as without
    accumulation and the update is the full-batch update."""
    model = TinyDenoiser(num_classes=NUM_CLASSES, diffusion=False)
    augment = functools.partial(random_affine, max_rotation=0.3, max_translation=1.5,
                                max_scale=0.1)
    tx, lr = optax.sgd(1.0), (lambda s: 1.0)
    batch, key = _batch(), jax.random.key(5)
    kw = dict(method="unet", augment=augment)
    _, full, m_full = _run(model, tx, lr, batch, key, **kw)
    _, acc, m_acc = _run(model, tx, lr, batch, key, grad_accum_steps=2, **kw)
    _assert_trees_close(acc.params, full.params)
    np.testing.assert_allclose(m_acc["loss"], m_full["loss"], atol=ATOL, rtol=RTOL)
    _, plain, _ = _run(model, tx, lr, batch, key, method="unet")
    assert _max_abs_diff(plain.params, full.params) > 1e-3  # the augmentation did something


@pytest.mark.slow
@pytest.mark.parametrize(("output", "recycling"), [("x0", True), ("eps", False)])
def test_diffusion_step_is_the_mean_over_microbatches_with_folded_keys(output, recycling):
    """Diffusion draws k and the noise per microbatch from fold_in(loss key, i): the step's
    gradient is the mean of loss_fn's gradients on microbatch i = examples i, i + M, ... with
    that key (a Python loop here, the scan in the step), loss parts included."""
    steps = 4
    model = TinyDenoiser(num_classes=NUM_CLASSES)
    schedule = make_schedule(1000, 5)
    tx, lr = optax.sgd(1.0), (lambda s: 1.0)
    batch, key = _batch(), jax.random.key(2)
    kw = dict(method="diffusion", schedule=schedule, output=output, recycling=recycling)
    old, new, metrics = _run(model, tx, lr, batch, key, grad_accum_steps=steps, **kw)
    grad_fn = jax.jit(jax.value_and_grad(make_loss_fn(model, **kw), has_aux=True))
    _, key_loss = jax.random.split(key)
    runs = [grad_fn(old, batch["image"][i::steps], batch["label"][i::steps],
                    jax.random.fold_in(key_loss, i)) for i in range(steps)]
    mean_grad = jax.tree.map(lambda *g: sum(g) / steps, *[grads for _, grads in runs])
    _assert_trees_close(jax.tree.map(lambda a, b: a - b, old, new.params), mean_grad)
    np.testing.assert_allclose(metrics["loss"], np.mean([float(loss) for (loss, _), _ in runs]),
                               atol=ATOL, rtol=RTOL)
    for name in ("loss_ce", "loss_dice", "loss_noise"):
        expected = np.mean([float(parts[name]) for (_, parts), _ in runs])
        np.testing.assert_allclose(metrics[name], expected, atol=ATOL, rtol=RTOL, err_msg=name)
    assert (metrics["loss_noise"] > 0) == (output == "eps")


@pytest.mark.slow
def test_one_key_reproduces_the_step_bit_for_bit_and_another_does_not():
    model = TinyDenoiser(num_classes=NUM_CLASSES)
    tx, lr = make_optimizer(1e-2, 0, 10, weight_decay=1e-4, grad_clip_norm=1.0)
    step = jax.jit(make_train_step(model, tx, lr, method="diffusion", recycling=True,
                                   schedule=make_schedule(1000, 5), grad_accum_steps=2))
    state = create_train_state(model, tx, jax.random.key(0), (B, *SPATIAL, 1), diffusion=True)
    batch = _batch()
    a, ma = jax.device_get(step(state, batch, jax.random.key(4)))
    b, mb = jax.device_get(step(state, batch, jax.random.key(4)))
    c, _ = jax.device_get(step(state, batch, jax.random.key(5)))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert ma == mb
    assert _max_abs_diff(a.params, c.params) > 0


def test_grad_accum_1_is_the_step_without_accumulation():
    """M = 1 calls grad_fn on the whole batch with the loss key itself: the former program."""
    model = TinyDenoiser(num_classes=NUM_CLASSES)
    loss_fn = make_loss_fn(model, method="diffusion", schedule=make_schedule(1000, 5),
                           recycling=True)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    params = jax.eval_shape(lambda: create_train_state(
        model, optax.sgd(1.0), jax.random.key(0), (B, *SPATIAL, 1), diffusion=True)).params
    batch, key = _batch(), jax.random.key(3)
    direct = jax.make_jaxpr(grad_fn)(params, batch["image"], batch["label"], key)
    via = jax.make_jaxpr(lambda p, i, lb, k: accumulate_gradients(grad_fn, p, i, lb, k, 1))(
        params, batch["image"], batch["label"], key)
    assert str(via) == str(direct)


def _primitives(jaxpr, found):
    """(primitive name, params) of every equation, nested jaxprs (scan bodies, pjit) included."""
    for eqn in jaxpr.eqns:
        found.append((eqn.primitive.name, eqn.params))
        for value in eqn.params.values():
            for sub in value if isinstance(value, (list, tuple)) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    _primitives(inner, found)
    return found


@pytest.mark.slow
def test_one_scan_not_a_python_loop_and_one_compile_for_repeated_calls():
    model = TinyDenoiser(num_classes=NUM_CLASSES)
    tx, lr = optax.sgd(1e-3), (lambda s: 1e-3)
    kw = dict(method="diffusion", schedule=make_schedule(1000, 5), recycling=True)
    batch = _batch()
    state = create_train_state(model, tx, jax.random.key(0), (B, *SPATIAL, 1), diffusion=True)

    def ops(steps):
        step = make_train_step(model, tx, lr, grad_accum_steps=steps, **kw)
        return _primitives(jax.make_jaxpr(step)(state, batch, jax.random.key(0)).jaxpr, [])

    programs = {m: ops(m) for m in (1, 4)}
    convs = {m: sum(name == "conv_general_dilated" for name, _ in programs[m]) for m in (1, 4)}
    assert convs[1] > 0 and convs[4] == convs[1]  # the program does not grow with M
    assert [p["length"] for name, p in programs[4] if name == "scan"] == [4]
    assert not [name for name, _ in programs[1] if name == "scan"]

    traces = []

    def counted(state, batch, key):
        traces.append(1)  # runs only when jax traces, i.e. compiles
        return make_train_step(model, tx, lr, grad_accum_steps=4, **kw)(state, batch, key)

    jitted = jax.jit(counted, donate_argnums=0)
    for i in range(3):
        state, _ = jitted(state, _batch(seed=i), jax.random.key(i))
    assert len(traces) == 1 and jitted._cache_size() == 1


@pytest.mark.parametrize(("batch_size", "steps"), [(6, 4), (8, 3), (1, 2)])
def test_a_batch_the_microbatches_do_not_divide_names_both_numbers(batch_size, steps):
    model = TinyDenoiser(num_classes=NUM_CLASSES, diffusion=False)
    tx = optax.sgd(1.0)
    step = make_train_step(model, tx, lambda s: 1.0, method="unet", grad_accum_steps=steps)
    batch = _batch(batch_size)
    state = jax.eval_shape(lambda: create_train_state(
        model, tx, jax.random.key(0), batch["image"].shape, False))
    with pytest.raises(ValueError, match=f"batch size {batch_size} is not divisible by "
                                         f"grad_accum_steps {steps}"):
        jax.eval_shape(step, state, batch, jax.random.key(0))  # raised when traced


@pytest.mark.parametrize("steps", [0, -2, 2.0, True, "2"])
def test_grad_accum_steps_must_be_a_positive_int(steps):
    model = TinyDenoiser(num_classes=NUM_CLASSES, diffusion=False)
    with pytest.raises(ValueError, match=f"grad_accum_steps must be an int >= 1, got {steps!r}"):
        make_train_step(model, optax.sgd(1.0), lambda s: 1.0, method="unet",
                        grad_accum_steps=steps)


# Data parallel: a 4-device CPU mesh (as a TPU v4-8 trial) at batch 8. Strided microbatches of
# 4 volumes keep one volume per device: no data moves, only the gradient all-reduce, and the
# result is the one-device step's. Microbatches of 1 volume (grad_accum_steps 8, the paper
# profile) are correct too, but XLA gathers each volume onto every device and each device
# computes the whole gradient (no all-reduce left): what paper_tpu.yaml warns about.
SHARDED = textwrap.dedent(
    """
    import re
    import jax, numpy as np
    from diffseg3d.core.diffusion import make_schedule
    from diffseg3d.core.train import (create_train_state, make_mesh, make_optimizer,
                                      make_train_step, replicate, shard_batch)
    from tests.core.train.tiny_model import TinyDenoiser

    assert len(jax.local_devices()) == 4, jax.local_devices()
    model = TinyDenoiser(num_classes=3)
    tx, lr = make_optimizer(1e-2, 0, 10, weight_decay=1e-4, grad_clip_norm=1.0)
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, (8, 8, 8, 4)).astype(np.int32)
    batch = {"image": (label[..., None] + rng.standard_normal((8, 8, 8, 4, 1))).astype("f4"),
             "label": label}
    COLLECTIVES = r"(all-gather|all-to-all|collective-permute|all-reduce|reduce-scatter)"
    for steps in (2, 8):
        step = make_train_step(model, tx, lr, method="diffusion", recycling=True,
                               schedule=make_schedule(1000, 5), grad_accum_steps=steps)
        out = {}
        for n in (1, 4):
            mesh = make_mesh(jax.local_devices()[:n])
            state = create_train_state(model, tx, jax.random.key(0), (8, 8, 8, 4, 1), True)
            state, b = replicate(state, mesh), shard_batch(batch, mesh)
            compiled = jax.jit(step).lower(state, b, jax.random.key(3)).compile()
            hlo = compiled.as_text()
            new, metrics = compiled(state, b, jax.random.key(3))
            out[n] = (jax.device_get(new.params), jax.device_get(metrics),
                      sorted(set(re.findall(COLLECTIVES, hlo))))
        for a, c in zip(jax.tree.leaves(out[1][0]), jax.tree.leaves(out[4][0]), strict=True):
            np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out[1][1]["loss"], out[4][1]["loss"], rtol=1e-5)
        assert out[1][2] == [], out[1][2]
        print(f"steps={steps} collectives={','.join(out[4][2])}")
    """
)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_data_parallel_microbatches_keep_one_volume_per_device():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": root,
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    done = subprocess.run([sys.executable, "-c", SHARDED], env=env, cwd=root,
                          capture_output=True, text=True,
                          timeout=1700)  # a hang guard only, not a speed check
    assert done.returncode == 0, done.stderr[-3000:]
    assert "steps=2 collectives=all-reduce\n" in done.stdout, done.stdout
    assert "steps=8 collectives=all-gather\n" in done.stdout, done.stdout
