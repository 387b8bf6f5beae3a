"""Schedules vs closed forms computed here in float64 NumPy (paper 3.4)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion import make_schedule, resample, resampled_timesteps
from diffseg3d.core.diffusion.schedule import base_betas


def test_linear_base_schedule_matches_linspace_cumprod():
    schedule = make_schedule(num_timesteps=1000, num_steps=1000, kind="linear")
    betas = np.linspace(1e-4, 0.02, 1000)
    np.testing.assert_array_equal(np.asarray(schedule.timesteps), np.arange(1, 1001))
    np.testing.assert_allclose(np.asarray(schedule.betas), betas, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(schedule.alphas_cumprod), np.cumprod(1 - betas), rtol=1e-5
    )
    abar_prev = np.concatenate([[1.0], np.cumprod(1 - betas)[:-1]])
    np.testing.assert_allclose(np.asarray(schedule.alphas_cumprod_prev), abar_prev, rtol=1e-5)


def test_cosine_base_schedule_matches_nichol_dhariwal_formula():
    T, s = 1000, 0.008
    f = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    expected = np.array([min(1 - f(t) / f(t - 1), 0.999) for t in range(1, T + 1)])
    np.testing.assert_allclose(base_betas(T, "cosine"), expected, rtol=1e-12)
    assert expected[-1] == 0.999  # the clip is exercised
    schedule = make_schedule(T, T, "cosine")
    np.testing.assert_allclose(
        np.asarray(schedule.alphas_cumprod), np.cumprod(1 - expected), rtol=1e-5
    )


def test_resampled_timesteps_k5_equals_rounded_linspace():
    timesteps = np.asarray(make_schedule(1000, 5).timesteps)
    np.testing.assert_array_equal(timesteps, [1, 251, 500, 750, 1000])
    np.testing.assert_array_equal(timesteps, np.round(np.linspace(1, 1000, 5)))


@pytest.mark.parametrize("num_steps", [2, 3, 7, 999])
def test_resampled_timesteps_strictly_increasing_with_fixed_ends(num_steps):
    timesteps = resampled_timesteps(1000, num_steps)
    assert timesteps[0] == 1 and timesteps[-1] == 1000 and len(timesteps) == num_steps
    assert np.all(np.diff(timesteps) > 0)


def test_single_step_schedule_is_the_step_at_t():
    schedule = make_schedule(1000, 1)
    base = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_array_equal(np.asarray(schedule.timesteps), [1000])
    np.testing.assert_allclose(np.asarray(schedule.betas), [1 - base[-1]], rtol=1e-6)


@pytest.mark.parametrize("num_steps", [0, -1, 1001])
def test_bad_number_of_steps_is_rejected(num_steps):
    with pytest.raises(ValueError, match="num_steps"):
        make_schedule(1000, num_steps)


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="'quadratic'"):
        make_schedule(kind="quadratic")


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_resampling_keeps_base_alphas_cumprod_and_recomputes_betas(kind):
    base = np.cumprod(1 - base_betas(1000, kind))
    schedule = make_schedule(1000, 5, kind)
    abar = np.asarray(schedule.alphas_cumprod, dtype=np.float64)
    np.testing.assert_allclose(abar, base[[0, 250, 499, 749, 999]], rtol=1e-6)
    assert abar[0] == np.float32(base[0]) and abar[-1] == np.float32(base[-1])
    betas = np.asarray(schedule.betas, dtype=np.float64)
    assert np.all((betas > 0) & (betas <= 1))
    # float64 beta_K of the cosine schedule is 1 - 1.7e-8, which float32 rounds to 1; alpha_K
    # (stored separately) stays positive so eq. 2 never divides by zero.
    assert np.all(np.asarray(schedule.alphas) > 0)
    if kind == "linear":
        assert np.all(betas < 1)
    abar_prev = np.concatenate([[1.0], base[[0, 250, 499, 749]]])
    np.testing.assert_allclose(betas, 1 - base[[0, 250, 499, 749, 999]] / abar_prev, rtol=1e-5)
    alphas = np.asarray(schedule.alphas, dtype=np.float64)
    np.testing.assert_allclose(alphas, 1 - betas, atol=1e-7)
    # The product of the resampled alphas telescopes back to the kept abar.
    np.testing.assert_allclose(np.cumprod(alphas), abar, rtol=1e-5)


def test_posterior_variance_by_hand_for_one_step():
    schedule = make_schedule(1000, 5)
    base = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    abar_k, abar_prev = base[499], base[250]  # k = 2 (t = 500), k - 1 = 1 (t = 251)
    beta_k = 1 - abar_k / abar_prev
    expected = (1 - abar_prev) / (1 - abar_k) * beta_k
    np.testing.assert_allclose(float(schedule.posterior_variance[2]), expected, rtol=1e-5)
    assert float(schedule.posterior_variance[0]) == 0.0
    log_var = np.asarray(schedule.posterior_log_variance_clipped)
    np.testing.assert_allclose(log_var[2], np.log(expected), rtol=1e-5)
    assert log_var[0] == log_var[1]  # improved-DDPM clipping of log 0


def test_k_equal_t_reproduces_the_base_schedule_and_resample_is_identity():
    full = make_schedule(1000, 1000)
    np.testing.assert_allclose(np.asarray(full.betas), np.linspace(1e-4, 0.02, 1000), rtol=1e-5)
    assert resample(full, 1000) is full
    five = resample(full, 5)
    direct = make_schedule(1000, 5)
    np.testing.assert_array_equal(np.asarray(five.timesteps), np.asarray(direct.timesteps))
    for name in ("betas", "alphas_cumprod", "posterior_variance"):
        np.testing.assert_allclose(
            np.asarray(getattr(five, name)), np.asarray(getattr(direct, name)), rtol=2e-5
        )


def test_resample_rejects_an_already_resampled_schedule():
    with pytest.raises(ValueError, match="full schedule"):
        resample(make_schedule(1000, 5), 3)


def test_schedule_is_a_pytree_usable_in_jit_with_static_t():
    schedule = make_schedule(1000, 5)
    leaves = jax.tree_util.tree_leaves(schedule)
    assert len(leaves) == 8  # num_timesteps is static, not a leaf

    @jax.jit
    def first_time(s):
        return s.timesteps[1].astype(jnp.float32) / s.num_timesteps

    assert float(first_time(schedule)) == pytest.approx(0.251)
