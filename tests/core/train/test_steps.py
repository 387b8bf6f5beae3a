"""Train steps: what the network sees (eq. 3-5), stop-gradient through recycling, metrics."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from diffseg3d.core.diffusion import (
    label_to_mask,
    logits_to_mask,
    make_schedule,
    model_time,
    q_sample,
)
from diffseg3d.core.losses.segmentation import segmentation_loss
from diffseg3d.core.train.optimizer import make_optimizer
from diffseg3d.core.train.state import create_train_state
from diffseg3d.core.train.steps import METRIC_NAMES, make_train_step

NUM_CLASSES = 3
SHAPE = (2, 4, 4, 2)  # (batch, *spatial)
SEEN: list[tuple[np.ndarray, np.ndarray]] = []  # (x_t, t) per network call, filled by Probe


class Probe(nn.Module):
    """Per-voxel linear model of (image, x_t, t) that records every (x_t, t) it is given.

    Tests that record through it need a CPU backend (``jax.debug.callback``), and pin full
    float32: they compare the step's values with the same maths done outside the step."""

    num_classes: int = NUM_CLASSES
    diffusion: bool = True

    @nn.compact
    def __call__(self, image, x_t=None, t=None):
        if not self.diffusion:
            return nn.Dense(self.num_classes)(image)
        jax.debug.callback(lambda a, b: SEEN.append((np.asarray(a), np.asarray(b))), x_t, t)
        t_map = jnp.broadcast_to(t[:, None, None, None, None], (*x_t.shape[:-1], 1))
        return nn.Dense(self.num_classes)(jnp.concatenate([image, x_t, t_map], axis=-1))


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, NUM_CLASSES, SHAPE).astype(np.int32)
    image = (label[..., None] + 0.3 * rng.standard_normal((*SHAPE, 1))).astype(np.float32)
    return {"image": jnp.asarray(image), "label": jnp.asarray(label)}


def _sgd_step(model, schedule, **kw):
    """A step whose update is exactly -grad (SGD, lr 1), so the gradient is params - new."""
    tx = optax.sgd(1.0)
    state = create_train_state(model, tx, jax.random.key(1), (*SHAPE, 1), diffusion=True)
    step = make_train_step(model, tx, lambda s: 1.0, method="diffusion", schedule=schedule, **kw)
    return state, step


def _keys(key):
    """The step's documented split: (augment, loss) then loss -> (k, eps, eps_next)."""
    _, key_loss = jax.random.split(key)
    return jax.random.split(key_loss, 3)


@pytest.mark.slow
@pytest.mark.usefixtures("cpu_backend", "highest_precision")
def test_diffusion_step_feeds_q_sample_of_ground_truth():
    schedule = make_schedule(1000, 5)
    model = Probe()
    state, step = _sgd_step(model, schedule, recycling=False)
    batch, key = _batch(), jax.random.key(7)
    SEEN.clear()
    step(state, batch, key)
    key_k, key_eps, _ = _keys(key)
    k = jax.random.randint(key_k, (SHAPE[0],), 0, 5, dtype=jnp.int32)
    x0 = label_to_mask(batch["label"], NUM_CLASSES)
    eps = jax.random.normal(key_eps, x0.shape)
    abar = np.asarray(schedule.alphas_cumprod)[np.asarray(k)].reshape(-1, 1, 1, 1, 1)
    expected = np.sqrt(abar) * np.asarray(x0) + np.sqrt(1 - abar) * np.asarray(eps)
    x_seen, t_seen = SEEN[0]
    np.testing.assert_allclose(x_seen, expected, rtol=1e-5, atol=1e-6)
    # The network gets t_k / T, never k.
    np.testing.assert_allclose(t_seen, np.asarray(schedule.timesteps)[np.asarray(k)] / 1000.0)


def _recycled_inputs(params, model, schedule, batch, key):
    key_k, key_eps, key_next = _keys(key)
    k = jax.random.randint(key_k, (SHAPE[0],), 0, 5, dtype=jnp.int32)
    x0 = label_to_mask(batch["label"], NUM_CLASSES)
    eps = jax.random.normal(key_eps, x0.shape)
    eps_next = jax.random.normal(key_next, x0.shape)
    k_next = jnp.minimum(k + 1, 4)
    return k, k_next, x0, eps, eps_next


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
@pytest.mark.usefixtures("cpu_backend", "highest_precision")
def test_recycling_builds_x_t_from_prediction_and_stops_its_gradient():
    schedule = make_schedule(1000, 5)
    model = Probe()
    state, step = _sgd_step(model, schedule, recycling=True, use_dice=True)
    batch, key = _batch(), jax.random.key(3)
    params = state.params
    SEEN.clear()
    new_state, metrics = step(state, batch, key)
    grad_step = jax.tree.map(lambda a, b: a - b, params, new_state.params)

    k, k_next, x0, eps, eps_next = _recycled_inputs(params, model, schedule, batch, key)
    image, label = batch["image"], batch["label"]
    x_next = q_sample(schedule, x0, k_next, eps_next)
    x0_hat = logits_to_mask(
        model.apply({"params": params}, image, x_next, model_time(schedule, k_next))
    )
    x_t = q_sample(schedule, x0_hat, k, eps)
    # Two network calls: the prediction at k' from the ground truth, then training at k.
    np.testing.assert_allclose(SEEN[0][0], x_next, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(SEEN[1][0], x_t, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(SEEN[1][1], np.asarray(model_time(schedule, k)))
    assert not np.allclose(SEEN[1][0], q_sample(schedule, x0, k, eps), atol=1e-3)

    def loss_constant_input(p):
        logits = model.apply({"params": p}, image, x_t, model_time(schedule, k))
        return segmentation_loss(logits, label)[0]

    def loss_through_prediction(p):  # recycling without the stop-gradient
        pred = logits_to_mask(model.apply({"params": p}, image, x_next,
                                          model_time(schedule, k_next)))
        x = q_sample(schedule, pred, k, eps)
        return segmentation_loss(model.apply({"params": p}, image, x,
                                             model_time(schedule, k)), label)[0]

    g_const = jax.grad(loss_constant_input)(params)
    g_through = jax.grad(loss_through_prediction)(params)
    assert float(metrics["loss"]) == pytest.approx(float(loss_constant_input(params)), rel=1e-5)
    for a, b in zip(jax.tree.leaves(grad_step), jax.tree.leaves(g_const), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in
               zip(jax.tree.leaves(g_const), jax.tree.leaves(g_through), strict=True))
    assert diff > 1e-4


@pytest.mark.usefixtures("cpu_backend", "highest_precision")
def test_noise_prediction_adds_weighted_l2_on_eps():
    schedule = make_schedule(1000, 5)
    model = Probe()
    state, step = _sgd_step(model, schedule, output="eps", noise_loss_weight=0.1)
    batch, key = _batch(1), jax.random.key(11)
    SEEN.clear()
    _, metrics = step(state, batch, key)
    key_k, key_eps, _ = _keys(key)
    k = jax.random.randint(key_k, (SHAPE[0],), 0, 5, dtype=jnp.int32)
    eps = np.asarray(jax.random.normal(key_eps, (*SHAPE, NUM_CLASSES)))
    eps_hat = np.asarray(model.apply({"params": state.params}, batch["image"],
                                     jnp.asarray(SEEN[0][0]), model_time(schedule, k)))
    l2 = np.mean((eps_hat - eps) ** 2)
    assert float(metrics["loss_noise"]) == pytest.approx(l2, rel=1e-5)
    seg = float(metrics["loss_ce"]) + float(metrics["loss_dice"])
    assert float(metrics["loss"]) == pytest.approx(seg + 0.1 * l2, rel=1e-5)


@pytest.mark.usefixtures("highest_precision")
def test_unet_step_metrics_and_lr_from_schedule():
    model = Probe(diffusion=False)
    tx, schedule = make_optimizer(1e-2, warmup_steps=4, total_steps=20, weight_decay=0.0,
                                  grad_clip_norm=1.0)
    state = create_train_state(model, tx, jax.random.key(0), (*SHAPE, 1), diffusion=False)
    step = jax.jit(make_train_step(model, tx, schedule, method="unet"), donate_argnums=0)
    batch = _batch()
    logits = model.apply({"params": state.params}, batch["image"])
    loss, parts = segmentation_loss(logits, batch["label"])
    lrs = []
    for i in range(3):
        state, metrics = step(state, batch, jax.random.key(i))
        if i == 0:
            assert float(metrics["loss"]) == pytest.approx(float(loss), rel=1e-5)
            assert float(metrics["loss_dice"]) == pytest.approx(float(parts["loss_dice"]),
                                                               rel=1e-5)
            assert float(metrics["loss_noise"]) == 0.0
        lrs.append(float(metrics["lr"]))
    assert set(metrics) == set(METRIC_NAMES)
    assert all(v.dtype == jnp.float32 and v.shape == () for v in metrics.values())
    np.testing.assert_allclose(lrs, [0.0, 2.5e-3, 5e-3], rtol=1e-6)
    assert int(state.step) == 3


def test_augment_is_applied_inside_the_step():
    model = Probe(diffusion=False)
    tx = optax.sgd(1.0)
    state = create_train_state(model, tx, jax.random.key(0), (*SHAPE, 1), diffusion=False)
    flip = lambda key, image, label: (-image, label)
    plain = make_train_step(model, tx, lambda s: 1.0, method="unet")
    augmented = make_train_step(model, tx, lambda s: 1.0, method="unet", augment=flip)
    batch = _batch()
    _, m_aug = augmented(state, batch, jax.random.key(0))
    _, m_flipped = plain(state, {"image": -batch["image"], "label": batch["label"]},
                         jax.random.key(0))
    _, m_plain = plain(state, batch, jax.random.key(0))
    assert float(m_aug["loss"]) == pytest.approx(float(m_flipped["loss"]), rel=1e-6)
    assert float(m_aug["loss"]) != pytest.approx(float(m_plain["loss"]), rel=1e-3)


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="needs a schedule"):
        make_train_step(Probe(), optax.sgd(1.0), lambda s: 1.0, method="diffusion")
    with pytest.raises(ValueError, match="'noise'"):
        make_train_step(Probe(), optax.sgd(1.0), lambda s: 1.0, method="diffusion",
                        schedule=make_schedule(1000, 5), output="noise")


@pytest.mark.usefixtures("cpu_backend", "highest_precision")
@pytest.mark.parametrize("clip_x0", [True, False])
def test_noise_prediction_recycles_eq10_prediction_clipped_iff_clip_x0(clip_x0):
    """eq. 8-11: x_k is noised from x0 = eq. 10 of eps_hat at k' (clipped to [-1, 1] iff
    clip_x0, as the sampler does with that setting: tests/core/infer/test_sampling.py), not from
    the truth."""
    schedule = make_schedule(1000, 5)
    model = Probe()
    state, step = _sgd_step(model, schedule, output="eps", recycling=True, clip_x0=clip_x0)
    batch, key = _batch(2), jax.random.key(5)
    SEEN.clear()
    step(state, batch, key)
    k, k_next, x0, eps, eps_next = _recycled_inputs(state.params, model, schedule, batch, key)
    x_next = q_sample(schedule, x0, k_next, eps_next)
    eps_hat = model.apply({"params": state.params}, batch["image"], x_next,
                          model_time(schedule, k_next))
    abar = np.asarray(schedule.alphas_cumprod)[np.asarray(k_next)].reshape(-1, 1, 1, 1, 1)
    unclipped = (np.asarray(x_next) - np.sqrt(1 - abar) * np.asarray(eps_hat)) / np.sqrt(abar)
    assert np.any(np.abs(unclipped) > 1.05)  # so the clip matters here
    x0_hat = np.clip(unclipped, -1, 1) if clip_x0 else unclipped
    np.testing.assert_allclose(SEEN[0][0], x_next, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(SEEN[1][0], q_sample(schedule, jnp.asarray(x0_hat), k, eps),
                               rtol=1e-5, atol=1e-4)
