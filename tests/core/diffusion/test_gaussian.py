"""Gaussian diffusion maths vs an independent float64 NumPy posterior (eq. 1, 2, 10)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion import (
    eps_from_x0,
    make_schedule,
    model_time,
    posterior_log_variance,
    posterior_mean_eps,
    posterior_mean_x0,
    posterior_variance,
    q_sample,
    x0_from_eps,
)

SHAPE = (3, 4, 5, 2, 3)  # (batch, X, Y, Z, C)
K = np.array([0, 2, 4])


def _arrays(seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, SHAPE).astype(np.float32)
    eps = rng.standard_normal(SHAPE).astype(np.float32)
    return x0, eps


def test_q_sample_closed_form():
    schedule = make_schedule(1000, 5)
    x0, eps = _arrays()
    x_t = np.asarray(q_sample(schedule, x0, jnp.asarray(K), eps))
    base = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    abar = base[np.array([1, 251, 500, 750, 1000])[K] - 1].reshape(3, 1, 1, 1, 1)
    np.testing.assert_allclose(x_t, np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps, rtol=1e-5)


def test_posterior_mean_eq1_equals_eq2_when_consistent():
    schedule = make_schedule(1000, 5)
    x0, eps = _arrays(1)
    k = jnp.asarray(K)
    x_t = q_sample(schedule, x0, k, eps)
    mean_x0 = posterior_mean_x0(schedule, x0, x_t, k)
    mean_eps = posterior_mean_eps(schedule, eps, x_t, k)
    np.testing.assert_allclose(np.asarray(mean_x0), np.asarray(mean_eps), atol=2e-5)


def test_posterior_mean_matches_independent_float64_gaussian_posterior():
    """q(x_{s} | x_t, x0) from Bayes' rule on the two Gaussians, s = t_{k-1}."""
    base = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    timesteps = np.round(np.linspace(1, 1000, 5)).astype(int)
    schedule = make_schedule(1000, 5)
    x0, eps = _arrays(2)
    k = jnp.asarray(K)
    x_t = np.asarray(q_sample(schedule, x0, k, eps), dtype=np.float64)
    got = np.asarray(posterior_mean_x0(schedule, x0, x_t.astype(np.float32), k))
    for row, kk in enumerate(K):
        if kk == 0:  # s = 0: x_0 given x0 is x0 itself
            np.testing.assert_allclose(got[row], x0[row], rtol=1e-5, atol=1e-6)
            continue
        abar_t = base[timesteps[kk] - 1]
        abar_s = base[timesteps[kk - 1] - 1]
        a = abar_t / abar_s  # likelihood x_t | x_s ~ N(sqrt(a) x_s, 1 - a)
        # Prior x_s | x0 ~ N(sqrt(abar_s) x0, 1 - abar_s); the posterior adds the precisions.
        precision = 1 / (1 - abar_s) + a / (1 - a)
        expected = (
            np.sqrt(abar_s) * x0[row] / (1 - abar_s) + np.sqrt(a) * x_t[row] / (1 - a)
        ) / precision
        np.testing.assert_allclose(got[row], expected, rtol=1e-4, atol=1e-5)
        variance = posterior_variance(schedule, k, "fixed_small")[row]
        np.testing.assert_allclose(float(variance), 1 / precision, rtol=1e-5)


def test_x0_eps_round_trips():
    schedule = make_schedule(1000, 5)
    x0, eps = _arrays(3)
    k = jnp.asarray(K)
    x_t = q_sample(schedule, x0, k, eps)
    np.testing.assert_allclose(np.asarray(x0_from_eps(schedule, x_t, k, eps)), x0, atol=2e-3)
    np.testing.assert_allclose(np.asarray(eps_from_x0(schedule, x_t, k, x0)), eps, atol=1e-4)
    back = eps_from_x0(schedule, x_t, k, x0_from_eps(schedule, x_t, k, eps))
    np.testing.assert_allclose(np.asarray(back), eps, atol=1e-4)


def test_posterior_variance_kinds():
    schedule = make_schedule(1000, 5)
    k = jnp.arange(5)
    betas = np.asarray(schedule.betas)
    tilde = np.asarray(schedule.posterior_variance)
    large = np.asarray(posterior_variance(schedule, k, "fixed_large"))
    np.testing.assert_array_equal(large[1:], betas[1:])
    assert large[0] == tilde[1]  # improved-DDPM first entry
    np.testing.assert_array_equal(np.asarray(posterior_variance(schedule, k, "fixed_small")), tilde)
    np.testing.assert_allclose(
        np.asarray(posterior_log_variance(schedule, k, "fixed_large")), np.log(large), rtol=1e-6
    )
    assert posterior_variance(schedule, k, ndim=5).shape == (5, 1, 1, 1, 1)
    with pytest.raises(ValueError, match="'learned'"):
        posterior_variance(schedule, k, "learned")


def test_model_time_is_original_time_over_t_not_index():
    schedule = make_schedule(1000, 5)
    t = jax.jit(model_time)(schedule, jnp.array([0, 1, 2, 3, 4]))
    assert t.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(t), [0.001, 0.251, 0.5, 0.75, 1.0], rtol=1e-6)


def test_model_time_is_the_correctly_rounded_t_over_T_eager_and_under_jit():
    """t_k / T to the float32 nearest, whatever the compiler does with a division by a constant
    (XLA turns x / 1000 into x * float32(1 / 1000), 1 ulp off for most t): the training step and
    the sampler must see bit-identical times for the same t."""
    schedule = make_schedule(1000, 1000)
    k = jnp.arange(1000)
    expected = (np.arange(1, 1001) / 1000.0).astype(np.float32)  # float64 division, one rounding
    np.testing.assert_array_equal(np.asarray(jax.jit(model_time)(schedule, k)), expected)
    np.testing.assert_array_equal(np.asarray(model_time(schedule, k)), expected)
    five = make_schedule(1000, 5)
    np.testing.assert_array_equal(
        np.asarray(jax.jit(model_time)(five, jnp.arange(5))), expected[[0, 250, 499, 749, 999]]
    )


def test_step_index_must_be_a_batch_vector():
    schedule = make_schedule(1000, 5)
    x0, eps = _arrays()
    with pytest.raises(ValueError, match=r"\(batch,\)"):
        q_sample(schedule, x0, jnp.asarray(1), eps)
