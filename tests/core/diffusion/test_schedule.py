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


def _float64_reference(kind: str, num_steps: int) -> dict[str, np.ndarray]:
    """Every table of a K-step schedule, straight from the definitions in float64."""
    abar_base = np.cumprod(1.0 - base_betas(1000, kind))
    abar = abar_base[resampled_timesteps(1000, num_steps) - 1]
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    betas = 1.0 - abar / abar_prev
    return {
        "betas": betas,
        "alphas": abar / abar_prev,
        "alphas_cumprod": abar,
        "alphas_cumprod_prev": abar_prev,
        "one_minus_alphas_cumprod": 1.0 - abar,
        "posterior_variance": (1.0 - abar_prev) / (1.0 - abar) * betas,
        # Posterior mean coefficients of eq. 1 (x0_hat and x_k) and eq. 2 (x_k and eps_hat).
        "coef_x0": np.sqrt(abar_prev) * betas / (1.0 - abar),
        "coef_xt": np.sqrt(abar / abar_prev) * (1.0 - abar_prev) / (1.0 - abar),
        "coef_eps_xt": 1.0 / np.sqrt(abar / abar_prev),
        "coef_eps_eps": -betas / np.sqrt(1.0 - abar) / np.sqrt(abar / abar_prev),
    }


def _relative_error(got, expected) -> float:
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    nonzero = expected != 0
    assert np.all(got[~nonzero] == 0)  # beta_tilde at t = 1 is exactly 0
    return float(np.max(np.abs(got[nonzero] - expected[nonzero]) / np.abs(expected[nonzero])))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
@pytest.mark.parametrize("num_steps", [1000, 5, 2])
def test_every_table_and_coefficient_is_float64_exact_to_1e6_at_every_step(kind, num_steps):
    """Float32 tables rounded once from float64: at t = 1 (abar = 0.9999) a float32
    `1 - abar` would already be off by ~1e-4 relative, and so would beta_tilde at t = 2."""
    from diffseg3d.core.diffusion.gaussian import posterior_mean_eps, posterior_mean_x0

    ref = _float64_reference(kind, num_steps)
    schedule = make_schedule(1000, num_steps, kind)
    for name in ("betas", "alphas", "alphas_cumprod", "alphas_cumprod_prev",
                 "one_minus_alphas_cumprod", "posterior_variance"):
        assert _relative_error(getattr(schedule, name), ref[name]) < 1e-6, name
    # The coefficients the reverse step uses, read off the means of unit inputs at every k.
    k = jnp.arange(num_steps)
    one, zero = jnp.ones((num_steps, 1)), jnp.zeros((num_steps, 1))
    got = {
        "coef_x0": posterior_mean_x0(schedule, one, zero, k)[:, 0],
        "coef_xt": posterior_mean_x0(schedule, zero, one, k)[:, 0],
        "coef_eps_xt": posterior_mean_eps(schedule, zero, one, k)[:, 0],
        "coef_eps_eps": posterior_mean_eps(schedule, one, zero, k)[:, 0],
    }
    for name, value in got.items():
        assert _relative_error(value, ref[name]) < 1e-6, name
    # t = 1 is the first row; its one_minus_abar is 1e-4 for the linear schedule.
    assert int(schedule.timesteps[0]) == 1


def test_resampling_a_full_schedule_is_float64_exact_to_1e6():
    ref = _float64_reference("linear", 5)
    five = resample(make_schedule(1000, 1000), 5)
    for name in ("betas", "alphas_cumprod", "one_minus_alphas_cumprod", "posterior_variance"):
        assert _relative_error(getattr(five, name), ref[name]) < 1e-6, name
