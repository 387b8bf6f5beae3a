"""K-step sampler: perfect models decode the truth, times t_k / T, eq. 1 wiring, determinism."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion import (
    eps_from_x0,
    label_to_mask,
    logits_to_mask,
    make_schedule,
    posterior_mean_x0,
    posterior_variance,
)
from diffseg3d.core.infer import make_sampler, predict_unet

NUM_CLASSES = 3
SHAPE = (2, 4, 4, 2)
TIMES: list[np.ndarray] = []


def _label(seed=0):
    return np.random.default_rng(seed).integers(0, NUM_CLASSES, SHAPE).astype(np.int32)


class Oracle(nn.Module):
    """Ignores x_t: logits 10 * onehot(label) with the label carried in image channel 0."""

    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, image, x_t, t):
        jax.debug.callback(lambda a: TIMES.append(np.asarray(a)), t, ordered=True)
        onehot = jax.nn.one_hot(image[..., 0].astype(jnp.int32), self.num_classes)
        return 10.0 * onehot + 0.0 * x_t


class EpsOracle(nn.Module):
    """Noise predictor whose eq. 10 gives exactly the true mask (k recovered from t = t_k/T)."""

    timesteps: tuple
    abar: tuple
    num_classes: int = NUM_CLASSES

    @nn.compact
    def __call__(self, image, x_t, t):
        k = jnp.argmin(jnp.abs(jnp.asarray(self.timesteps)[None] / 1000.0 - t[:, None]), axis=1)
        abar = jnp.asarray(self.abar)[k].reshape(-1, 1, 1, 1, 1)
        x0 = label_to_mask(image[..., 0].astype(jnp.int32), self.num_classes)
        return (x_t - jnp.sqrt(abar) * x0) / jnp.sqrt(1.0 - abar)


class Identity(nn.Module):
    """logits = x_t + a learned-free bias: its x0_hat depends on the sampler's x_t."""

    num_classes: int = NUM_CLASSES

    def __call__(self, image, x_t, t):
        return x_t + 0.1 * image


@pytest.mark.usefixtures("cpu_backend")  # Oracle records t through jax.debug.callback
@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_perfect_x0_model_gives_true_label_and_sees_t_over_T(method):
    schedule = make_schedule(1000, 5)
    label = _label()
    image = jnp.asarray(label[..., None].astype(np.float32))
    sample = make_sampler(Oracle(), schedule, output="x0", method=method)
    TIMES.clear()
    pred, traj = sample({}, image, jax.random.key(0), return_trajectory=True)
    jax.effects_barrier()
    assert traj.shape == (5, *SHAPE, NUM_CLASSES)
    np.testing.assert_array_equal(np.asarray(pred), label)
    np.testing.assert_array_equal(np.asarray(jnp.argmax(traj[-1], -1)), label)
    expected_t = np.asarray(schedule.timesteps)[::-1] / 1000.0  # t_K = T first, t_1 = 1 last
    np.testing.assert_allclose(np.stack(TIMES)[:, 0], expected_t, rtol=1e-6)
    assert np.stack(TIMES).shape == (5, SHAPE[0])


def test_perfect_eps_model_gives_true_label():
    schedule = make_schedule(1000, 5)
    label = _label(1)
    image = jnp.asarray(label[..., None].astype(np.float32))
    model = EpsOracle(tuple(np.asarray(schedule.timesteps).tolist()),
                      tuple(np.asarray(schedule.alphas_cumprod).tolist()))
    pred, traj = make_sampler(model, schedule, output="eps")({}, image, jax.random.key(2),
                                                             return_trajectory=True)
    np.testing.assert_array_equal(np.asarray(pred), label)
    # every step's x0_hat is the exact mask (eq. 10 inverts the oracle's eps)
    np.testing.assert_allclose(traj, np.broadcast_to(label_to_mask(label, 3), traj.shape),
                               atol=2e-3)


class AffineEps(nn.Module):
    """Noise predictor eps_hat = 3 x_t - 2: its eq. 10 estimate leaves the mask range."""

    num_classes: int = NUM_CLASSES

    def __call__(self, image, x_t, t):
        return 3.0 * x_t - 2.0 + 0.0 * image


@pytest.mark.parametrize("clip_x0", [True, False])
def test_eps_x0_hat_is_eq10_clipped_iff_clip_x0(clip_x0):
    """Row 0 of the trajectory is eq. 10 at x_K (by hand, float64), clipped to [-1, 1] iff
    clip_x0 -- the same x0_hat that training recycles with that setting (test_steps.py)."""
    schedule = make_schedule(1000, 5)
    image = jnp.zeros((*SHAPE, 1), jnp.float32)
    key = jax.random.key(6)
    sample = make_sampler(AffineEps(), schedule, output="eps", clip_x0=clip_x0)
    _, traj = sample({}, image, key, return_trajectory=True)
    x_last = np.asarray(jax.random.normal(jax.random.split(key)[0], (*SHAPE, NUM_CLASSES)),
                        np.float64)
    abar = float(np.asarray(schedule.alphas_cumprod, np.float64)[4])
    x0 = (x_last - np.sqrt(1 - abar) * (3.0 * x_last - 2.0)) / np.sqrt(abar)
    np.testing.assert_allclose(traj[0], np.clip(x0, -1, 1) if clip_x0 else x0, rtol=1e-4,
                               atol=1e-4)
    assert (float(jnp.max(jnp.abs(traj))) > 1.0) is not clip_x0


def test_ddpm_steps_follow_eq1_with_fixed_large_variance():
    """Recompute the chain by hand with the documented keys: x_K ~ N(0, I) from the first split,
    z_k from fold_in(second split, k), x_{k-1} = mu(eq. 1) + sqrt(var_k) z_k, no noise at k=0."""
    schedule = make_schedule(1000, 3)
    image = jnp.asarray(np.random.default_rng(0).standard_normal((*SHAPE, 1)), jnp.float32)
    key = jax.random.key(5)
    _, traj = make_sampler(Identity(), schedule)({}, image, key, return_trajectory=True)
    key_init, key_steps = jax.random.split(key)
    shape = (*SHAPE, NUM_CLASSES)
    x = jax.random.normal(key_init, shape)
    for row, k in enumerate([2, 1, 0]):
        kk = jnp.full((SHAPE[0],), k)
        x0_hat = logits_to_mask(x + 0.1 * image)
        np.testing.assert_allclose(traj[row], x0_hat, rtol=1e-5, atol=1e-6)
        beta_k = float(schedule.betas[k]) if k > 0 else float(schedule.posterior_variance[1])
        var = posterior_variance(schedule, kk, "fixed_large", ndim=5)
        assert float(var[0, 0, 0, 0, 0]) == pytest.approx(beta_k, rel=1e-6)
        noise = jax.random.normal(jax.random.fold_in(key_steps, k), shape)
        x = posterior_mean_x0(schedule, x0_hat, x, kk) + (np.sqrt(beta_k) if k else 0.0) * noise


def test_ddim_is_deterministic_update_from_x0_hat():
    schedule = make_schedule(1000, 3)
    image = jnp.zeros((*SHAPE, 1))
    key = jax.random.key(9)
    _, traj = make_sampler(Identity(), schedule, method="ddim")({}, image, key,
                                                                return_trajectory=True)
    x = jax.random.normal(jax.random.split(key)[0], (*SHAPE, NUM_CLASSES))
    for row, k in enumerate([2, 1, 0]):
        kk = jnp.full((SHAPE[0],), k)
        x0_hat = logits_to_mask(x)
        np.testing.assert_allclose(traj[row], x0_hat, rtol=1e-5, atol=1e-6)
        abar_prev = float(schedule.alphas_cumprod_prev[k])
        x = np.sqrt(abar_prev) * x0_hat + np.sqrt(1 - abar_prev) * eps_from_x0(
            schedule, x, kk, x0_hat)


def test_sampler_is_deterministic_per_key():
    schedule = make_schedule(1000, 5)
    image = jnp.asarray(np.random.default_rng(3).standard_normal((*SHAPE, 1)), jnp.float32)
    sample = make_sampler(Identity(), schedule)
    a = sample({}, image, jax.random.key(1), return_trajectory=True)[1]
    b = sample({}, image, jax.random.key(1), return_trajectory=True)[1]
    c = sample({}, image, jax.random.key(2), return_trajectory=True)[1]
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    label_only = sample({}, image, jax.random.key(1))
    np.testing.assert_array_equal(label_only, np.argmax(a[-1], -1))


def test_sampler_rejects_unknown_options():
    with pytest.raises(ValueError, match="'ddpx'"):
        make_sampler(Identity(), make_schedule(1000, 5), method="ddpx")
    with pytest.raises(ValueError, match="'fixed'"):
        make_sampler(Identity(), make_schedule(1000, 5), variance="fixed")


class Linear(nn.Module):
    num_classes: int = NUM_CLASSES
    diffusion: bool = False

    @nn.compact
    def __call__(self, image):
        return nn.Dense(self.num_classes)(image)


def test_predict_unet_is_argmax_of_logits():
    model = Linear()
    image = jnp.asarray(np.random.default_rng(0).standard_normal((*SHAPE, 1)), jnp.float32)
    params = model.init(jax.random.key(0), image)["params"]
    logits = np.asarray(model.apply({"params": params}, image))
    pred = predict_unet(model, params, image)
    assert pred.dtype == jnp.int32 and pred.shape == SHAPE
    np.testing.assert_array_equal(pred, logits.argmax(-1))


@pytest.mark.parametrize(("output", "width", "warns"),
                         [("eps", 8, True), ("eps", 16, False), ("x0", 8, False)])
def test_noise_sampler_warns_when_the_head_is_narrower_than_the_classes(output, width, warns):
    import warnings

    from diffseg3d.core.models.unet import UNet

    model = UNet(num_classes=9, channels=(width, 2 * width), num_res_blocks=1, diffusion=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_sampler(model, make_schedule(1000, 5), output=output)
    messages = [str(w.message) for w in caught if "head of" in str(w.message)]
    assert bool(messages) is warns
    if warns:
        assert f"{width} features for 9 classes" in messages[0]


@pytest.mark.parametrize(("output", "variance", "method", "warns"), [
    ("eps", "fixed_large", "ddpm", True),
    ("eps", "fixed_small", "ddpm", False),
    ("eps", "fixed_large", "ddim", False),
    ("x0", "fixed_large", "ddpm", False),
])
def test_noise_sampler_warns_when_its_last_step_cannot_remove_the_variance(
        output, variance, method, warns):
    import warnings

    from diffseg3d.core.models.unet import UNet

    model = UNet(num_classes=3, channels=(8, 16), num_res_blocks=1, diffusion=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        make_sampler(model, make_schedule(1000, 5), output=output, variance=variance,
                     method=method)
    messages = [str(w.message) for w in caught if "stays in the label" in str(w.message)]
    assert len(messages) == int(warns)
    if warns:
        assert "variance fixed_large over K = 5 steps" in messages[0]
