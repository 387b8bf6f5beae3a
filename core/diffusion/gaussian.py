"""Gaussian diffusion maths on a `Schedule`: forward noising, posterior mean and variance.

Every function takes a step index `k` of shape (batch,) (int, values in [0, K)) and arrays of
shape (batch, *spatial, C); per-step coefficients are gathered at k and broadcast over the
trailing axes. Equation numbers refer to Fu et al. (2023):

    q_sample:            x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps
    posterior_mean_x0:   mu = sqrt(abar_{k-1}) beta_k / (1 - abar_k) x0_hat
                              + sqrt(alpha_k) (1 - abar_{k-1}) / (1 - abar_k) x_k          (eq. 1)
    posterior_mean_eps:  mu = (x_k - beta_k / sqrt(1 - abar_k) eps_hat) / sqrt(alpha_k)    (eq. 2)
    x0_from_eps:         x0 = (x_k - sqrt(1 - abar_k) eps) / sqrt(abar_k)                  (eq. 10)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from diffseg3d.core.diffusion.schedule import Schedule

#: Variance choices for the reverse step p(x_{k-1} | x_k), see `posterior_variance`.
VARIANCE_KINDS = ("fixed_large", "fixed_small")


def _at(values: jnp.ndarray, k: jnp.ndarray, ndim: int) -> jnp.ndarray:
    """values[k] reshaped to (batch, 1, ..., 1) with `ndim` axes, to broadcast over an array."""
    k = jnp.asarray(k)
    if k.ndim != 1:
        raise ValueError(f"step index k must have shape (batch,), got shape {k.shape}.")
    gathered = values[k]
    return gathered.reshape(gathered.shape + (1,) * (ndim - 1))


def q_sample(
    schedule: Schedule, x0: jnp.ndarray, k: jnp.ndarray, noise: jnp.ndarray
) -> jnp.ndarray:
    """Samples q(x_k | x0) = N(sqrt(abar_k) x0, (1 - abar_k) I) with the given noise.

    Args:
        schedule: the diffusion schedule.
        x0: (batch, *spatial, C) clean mask in [-1, 1].
        k: (batch,) step indices.
        noise: (batch, *spatial, C) standard normal noise.

    Returns:
        (batch, *spatial, C) noisy mask x_k.
    """
    abar = _at(schedule.alphas_cumprod, k, x0.ndim)
    one_minus_abar = _at(schedule.one_minus_alphas_cumprod, k, x0.ndim)
    return jnp.sqrt(abar) * x0 + jnp.sqrt(one_minus_abar) * noise


def posterior_mean_x0(
    schedule: Schedule, x0_hat: jnp.ndarray, x_t: jnp.ndarray, k: jnp.ndarray
) -> jnp.ndarray:
    """Mean of q(x_{k-1} | x_k, x0 = x0_hat), for mask prediction (eq. 1).

    Args:
        schedule: the diffusion schedule.
        x0_hat: (batch, *spatial, C) predicted clean mask.
        x_t: (batch, *spatial, C) noisy mask at step k.
        k: (batch,) step indices.

    Returns:
        (batch, *spatial, C) posterior mean. At k = 0 it equals x0_hat (abar_{-1} = 1).
    """
    ndim = x_t.ndim
    beta = _at(schedule.betas, k, ndim)
    alpha = _at(schedule.alphas, k, ndim)
    one_minus_abar = _at(schedule.one_minus_alphas_cumprod, k, ndim)
    abar_prev = _at(schedule.alphas_cumprod_prev, k, ndim)
    # 1 - abar_{k-1} = beta_tilde_k (1 - abar_k) / beta_k, without cancellation near abar = 1.
    one_minus_abar_prev = _at(schedule.posterior_variance, k, ndim) * one_minus_abar / beta
    coeff_x0 = jnp.sqrt(abar_prev) * beta / one_minus_abar
    coeff_xt = jnp.sqrt(alpha) * one_minus_abar_prev / one_minus_abar
    return coeff_x0 * x0_hat + coeff_xt * x_t


def posterior_mean_eps(
    schedule: Schedule, eps_hat: jnp.ndarray, x_t: jnp.ndarray, k: jnp.ndarray
) -> jnp.ndarray:
    """Mean of p(x_{k-1} | x_k) from predicted noise, for noise prediction (eq. 2).

    Equal to `posterior_mean_x0` with x0_hat = x0_from_eps(x_t, eps_hat).

    Args:
        schedule: the diffusion schedule.
        eps_hat: (batch, *spatial, C) predicted noise.
        x_t: (batch, *spatial, C) noisy mask at step k.
        k: (batch,) step indices.

    Returns:
        (batch, *spatial, C) posterior mean.
    """
    ndim = x_t.ndim
    beta = _at(schedule.betas, k, ndim)
    alpha = _at(schedule.alphas, k, ndim)
    one_minus_abar = _at(schedule.one_minus_alphas_cumprod, k, ndim)
    return (x_t - beta / jnp.sqrt(one_minus_abar) * eps_hat) / jnp.sqrt(alpha)


def posterior_variance(
    schedule: Schedule, k: jnp.ndarray, kind: str = "fixed_large", ndim: int | None = None
) -> jnp.ndarray:
    """Variance of the reverse step p(x_{k-1} | x_k).

    Args:
        schedule: the diffusion schedule.
        k: (batch,) step indices.
        kind: "fixed_large" (the paper's code): beta_k, except that the k = 0 entry is replaced by
            beta_tilde at k = 1 (the second row), exactly as improved DDPM
            (`np.append(posterior_variance[1], betas[1:])`) and ImgX-DiffSeg do, so that its log
            stays finite and the last sampling step adds little noise.
            "fixed_small": beta_tilde_k = (1 - abar_{k-1}) / (1 - abar_k) beta_k (0 at k = 0).
            With K = 1 both kinds are beta_1.
        ndim: if given, the result is reshaped to (batch, 1, ..., 1) with `ndim` axes so that it
            broadcasts over a (batch, *spatial, C) array; default: shape (batch,).

    Returns:
        (batch,) float32 variances (or broadcastable, see `ndim`).
    """
    return _at(_variances(schedule, kind), k, 1 if ndim is None else ndim)


def posterior_log_variance(
    schedule: Schedule, k: jnp.ndarray, kind: str = "fixed_large", ndim: int | None = None
) -> jnp.ndarray:
    """log of `posterior_variance`, with the log 0 of "fixed_small" at k = 0 clipped as in
    improved DDPM (`Schedule.posterior_log_variance_clipped`). Same arguments and shapes."""
    if kind == "fixed_small":
        values = schedule.posterior_log_variance_clipped
    else:
        values = jnp.log(_variances(schedule, kind))
    return _at(values, k, 1 if ndim is None else ndim)


def _variances(schedule: Schedule, kind: str) -> jnp.ndarray:
    """(K,) variances of the reverse step for `kind` (see `posterior_variance`)."""
    if kind == "fixed_small":
        return schedule.posterior_variance
    if kind == "fixed_large":
        if schedule.num_steps == 1:
            return schedule.betas
        return jnp.concatenate([schedule.posterior_variance[1:2], schedule.betas[1:]])
    raise ValueError(f"Unknown variance kind {kind!r}; expected one of {VARIANCE_KINDS}.")


def x0_from_eps(
    schedule: Schedule, x_t: jnp.ndarray, k: jnp.ndarray, eps: jnp.ndarray
) -> jnp.ndarray:
    """Clean mask implied by noise: x0 = (x_k - sqrt(1 - abar_k) eps) / sqrt(abar_k) (eq. 10).

    Not clipped: the caller decides (losses use `mask.mask_to_logits`, which clips).

    Args:
        schedule: the diffusion schedule.
        x_t: (batch, *spatial, C) noisy mask at step k.
        k: (batch,) step indices.
        eps: (batch, *spatial, C) (predicted) noise.

    Returns:
        (batch, *spatial, C) x0.
    """
    abar = _at(schedule.alphas_cumprod, k, x_t.ndim)
    one_minus_abar = _at(schedule.one_minus_alphas_cumprod, k, x_t.ndim)
    return (x_t - jnp.sqrt(one_minus_abar) * eps) / jnp.sqrt(abar)


def eps_from_x0(
    schedule: Schedule, x_t: jnp.ndarray, k: jnp.ndarray, x0: jnp.ndarray
) -> jnp.ndarray:
    """Noise implied by a clean mask: eps = (x_k - sqrt(abar_k) x0) / sqrt(1 - abar_k).

    The inverse of `x0_from_eps`; used by DDIM with mask prediction.

    Args:
        schedule: the diffusion schedule.
        x_t: (batch, *spatial, C) noisy mask at step k.
        k: (batch,) step indices.
        x0: (batch, *spatial, C) (predicted) clean mask.

    Returns:
        (batch, *spatial, C) eps.
    """
    abar = _at(schedule.alphas_cumprod, k, x_t.ndim)
    one_minus_abar = _at(schedule.one_minus_alphas_cumprod, k, x_t.ndim)
    return (x_t - jnp.sqrt(abar) * x0) / jnp.sqrt(one_minus_abar)


def model_time(schedule: Schedule, k: jnp.ndarray) -> jnp.ndarray:
    """Network time input for step indices k, (batch,) float32, by `schedule.time_input`:

    - "fraction" (default): t_k / T in (0, 1], the original time, so a model trained with
      K = 1000 steps can be sampled with K = 5 (and vice versa) on the same inputs (design card);
    - "index": k itself in [0, K), as the released code feeds it; a model trained with K = 1000
      and sampled with K = 5 then sees 0..4, its least noisy training indices.

    The value is looked up in a table of t / T rounded once from float64, not divided on device:
    XLA rewrites a division by the constant T into a multiplication by float32(1 / T), which is
    1 ulp off for most t, and whether it does so depends on the compiler and backend.
    """
    if schedule.time_input == "index":
        return jnp.asarray(k).astype(jnp.float32)
    num_timesteps = schedule.num_timesteps
    times = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    return jnp.asarray(times, dtype=jnp.float32)[schedule.timesteps[jnp.asarray(k)]]
