"""Variance schedules and variance resampling (paper section 3.4).

A `Schedule` holds one row per diffusion *step index* k in [0, K). Row k describes the original
time t_k of a base schedule over T steps (1-based, t_1 = 1 < ... < t_K = T). With K = T it is the
base schedule itself; with K < T it is the resampled schedule of Nichol & Dhariwal (2021) used by
the paper (K = 5 for training and inference):

    abar_k = abar_{t_k}                 (cumulative products of the base schedule, kept as they are)
    beta_k = 1 - abar_k / abar_{k-1}    with abar_0 = 1
    alpha_k = 1 - beta_k
    beta_tilde_k = (1 - abar_{k-1}) / (1 - abar_k) * beta_k    (posterior variance, "fixed_small")

All arithmetic is done in float64 NumPy once, at construction; the stored arrays are float32 so the
schedule is a cheap pytree inside jit. What the network is given for row k is fixed by the
schedule's static `time_input` (see `gaussian.model_time`): t_k / T ("fraction", the default) or k
itself ("index", the released code's input).
"""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
from flax import struct

#: Base schedules known to `base_betas` / `make_schedule`.
SCHEDULE_KINDS = ("linear", "cosine")

#: Offset s of the cosine schedule (Nichol & Dhariwal 2021, eq. 17): keeps beta_1 from being tiny.
COSINE_OFFSET = 0.008

#: Largest beta allowed by the cosine schedule (Nichol & Dhariwal 2021): avoids a singularity at T.
COSINE_MAX_BETA = 0.999

#: What the network is given as time for step index k (`gaussian.model_time`): "fraction" is
#: t_k / T in (0, 1], the same value for the same noise level whatever K; "index" is k in [0, K)
#: itself, as the released code (ImgX-DiffSeg v0.1.0, `gaussian_diffusion.py:503-512, 683-688`)
#: feeds it, so a model trained with K = 1000 and sampled with K = 5 sees indices 0-4, the
#: indices of its five least noisy training steps.
TIME_INPUTS = ("fraction", "index")


def check_time_input(time_input: str) -> None:
    """ValueError naming the value unless `time_input` is one of `TIME_INPUTS`."""
    if time_input not in TIME_INPUTS:
        raise ValueError(f"time_input must be one of {TIME_INPUTS}, got {time_input!r}")


@struct.dataclass
class Schedule:
    """A (possibly resampled) Gaussian diffusion schedule; a jit-friendly pytree.

    Every array has shape (K,), row k for step index k (0-based) and original time t_k (1-based).

    Attributes:
        timesteps: (K,) int32, original times t_k ascending; t_1 = 1 and t_K = T (K = 1: [T]).
        betas: (K,) float32, beta_k = 1 - abar_k / abar_{k-1}.
        alphas: (K,) float32, alpha_k = 1 - beta_k.
        alphas_cumprod: (K,) float32, abar_k = abar_{t_k} of the base schedule.
        alphas_cumprod_prev: (K,) float32, abar_{k-1}, with abar_0 = 1.
        one_minus_alphas_cumprod: (K,) float32, 1 - abar_k computed in float64 before rounding:
            1 - float32(abar_1) would lose ~3 of float32's 7 digits at abar_1 = 0.9999.
        posterior_variance: (K,) float32, beta_tilde_k = (1 - abar_{k-1}) / (1 - abar_k) beta_k;
            zero at k = 0.
        posterior_log_variance_clipped: (K,) float32, log beta_tilde_k with the k = 0 entry
            (log 0) replaced by log beta_tilde at k = 1, as improved DDPM does.
        num_timesteps: static int, T of the base schedule (the denominator of the model time).
        time_input: static str in `TIME_INPUTS`, the network's time input for row k
            (`gaussian.model_time`): "fraction" t_k / T or "index" k.
    """

    timesteps: jnp.ndarray
    betas: jnp.ndarray
    alphas: jnp.ndarray
    alphas_cumprod: jnp.ndarray
    alphas_cumprod_prev: jnp.ndarray
    one_minus_alphas_cumprod: jnp.ndarray
    posterior_variance: jnp.ndarray
    posterior_log_variance_clipped: jnp.ndarray
    num_timesteps: int = struct.field(pytree_node=False)
    time_input: str = struct.field(pytree_node=False, default="fraction")

    @property
    def num_steps(self) -> int:
        """K, the number of rows (static: array shapes are static under jit)."""
        return int(self.timesteps.shape[0])


def base_betas(
    num_timesteps: int = 1000,
    kind: str = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> np.ndarray:
    """Betas of a base schedule over T steps, float64.

    Args:
        num_timesteps: T >= 1.
        kind: "linear" (Ho et al. 2020: linspace(beta_start, beta_end, T)) or "cosine"
            (Nichol & Dhariwal 2021: abar(t) = cos^2((t/T + s)/(1 + s) pi/2),
            beta_t = min(1 - abar(t)/abar(t-1), 0.999), s = 0.008). beta_start/beta_end are used by
            "linear" only.
        beta_start: beta_1 of the linear schedule.
        beta_end: beta_T of the linear schedule.

    Returns:
        (T,) float64 betas in (0, 1).
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}.")
    if kind == "linear":
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise ValueError(
                f"linear schedule needs 0 < beta_start <= beta_end < 1, "
                f"got beta_start={beta_start}, beta_end={beta_end}."
            )
        return np.linspace(beta_start, beta_end, num_timesteps, dtype=np.float64)
    if kind == "cosine":
        steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
        abar = np.cos((steps + COSINE_OFFSET) / (1.0 + COSINE_OFFSET) * math.pi / 2.0) ** 2
        return np.minimum(1.0 - abar[1:] / abar[:-1], COSINE_MAX_BETA)
    raise ValueError(f"Unknown beta schedule kind {kind!r}; expected one of {SCHEDULE_KINDS}.")


def resampled_timesteps(num_timesteps: int, num_steps: int) -> np.ndarray:
    """Original times t_k = round(linspace(1, T, K)) (paper 3.4), 1-based, strictly increasing.

    NumPy rounds half to even, so T = 1000, K = 5 gives [1, 251, 500, 750, 1000].

    Args:
        num_timesteps: T.
        num_steps: K with 1 <= K <= T. K = 1 gives [T], not linspace's [1]: sampling starts from
            pure noise at t_K = T, so a single step must be the step at T.

    Returns:
        (K,) int64.
    """
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(
            f"num_steps (K) must be in [1, num_timesteps={num_timesteps}], got {num_steps}."
        )
    if num_steps == 1:
        return np.full((1,), num_timesteps, dtype=np.int64)
    timesteps = np.round(np.linspace(1, num_timesteps, num_steps)).astype(np.int64)
    # Spacing (T-1)/(K-1) >= 1 and rounding moves each point by <= 0.5, so this cannot fire;
    # it guards the invariant the rest of the module relies on.
    if np.any(np.diff(timesteps) <= 0):
        raise AssertionError(f"resampled timesteps are not strictly increasing: {timesteps}.")
    return timesteps


def _schedule_from_betas(
    base_betas: np.ndarray, num_steps: int, time_input: str = "fraction"
) -> Schedule:
    """Resamples float64 (T,) betas of a base schedule to K steps and builds the `Schedule`."""
    check_time_input(time_input)
    num_timesteps = int(base_betas.shape[0])
    base_alphas_cumprod = np.cumprod(1.0 - base_betas)
    # 1 - prod(1 - beta) without cancellation near abar = 1: -expm1(sum(log1p(-beta))).
    base_one_minus_alphas_cumprod = -np.expm1(np.cumsum(np.log1p(-base_betas)))
    timesteps = resampled_timesteps(num_timesteps, num_steps)
    alphas_cumprod = base_alphas_cumprod[timesteps - 1]
    one_minus_alphas_cumprod = base_one_minus_alphas_cumprod[timesteps - 1]
    alphas_cumprod_prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    alphas = alphas_cumprod / alphas_cumprod_prev
    betas = 1.0 - alphas
    one_minus_prev = np.concatenate([[0.0], one_minus_alphas_cumprod[:-1]])
    posterior_variance = one_minus_prev / one_minus_alphas_cumprod * betas
    # beta_tilde at k = 0 is exactly 0 (abar_0 = 1); improved DDPM clips its log by reusing k = 1.
    first = posterior_variance[1] if num_steps > 1 else betas[0]
    log_variance_clipped = np.log(np.concatenate([[first], posterior_variance[1:]]))

    def f32(x: np.ndarray) -> jnp.ndarray:
        return jnp.asarray(x, dtype=jnp.float32)

    return Schedule(
        timesteps=jnp.asarray(timesteps, dtype=jnp.int32),
        betas=f32(betas),
        alphas=f32(alphas),
        alphas_cumprod=f32(alphas_cumprod),
        alphas_cumprod_prev=f32(alphas_cumprod_prev),
        one_minus_alphas_cumprod=f32(one_minus_alphas_cumprod),
        posterior_variance=f32(posterior_variance),
        posterior_log_variance_clipped=f32(log_variance_clipped),
        num_timesteps=num_timesteps,
        time_input=time_input,
    )


def make_schedule(
    num_timesteps: int = 1000,
    num_steps: int = 5,
    kind: str = "linear",
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    time_input: str = "fraction",
) -> Schedule:
    """Builds a base schedule over T steps and resamples it to K steps (paper 3.4).

    Args:
        num_timesteps: T of the base schedule (1000 in the paper).
        num_steps: K, the number of steps used for training or sampling (5 in the paper; K = T
            means no resampling).
        kind: base schedule, "linear" or "cosine" (see `base_betas`).
        beta_start: first beta of the linear schedule.
        beta_end: last beta of the linear schedule.
        time_input: the network's time input, "fraction" (t_k / T) or "index" (k); see
            `TIME_INPUTS`.

    Returns:
        A `Schedule` with K rows.
    """
    betas = base_betas(num_timesteps, kind, beta_start, beta_end)
    return _schedule_from_betas(betas, num_steps, time_input)


def resample(schedule_T: Schedule, num_steps: int) -> Schedule:
    """Resamples a full schedule (K = T rows, t_k = k + 1) to `num_steps` rows (paper 3.4).

    abar is rebuilt in float64 from the stored float32 betas, so the result equals
    `make_schedule(T, num_steps, ...)` to float32 rounding. With num_steps = T it returns the
    input unchanged.

    Args:
        schedule_T: a schedule with timesteps == 1..T (e.g. `make_schedule(T, T)`).
        num_steps: K in [1, T].

    Returns:
        A `Schedule` with K rows and the time input of `schedule_T`.
    """
    timesteps = np.asarray(schedule_T.timesteps)
    expected = np.arange(1, schedule_T.num_timesteps + 1)
    if timesteps.shape != expected.shape or np.any(timesteps != expected):
        raise ValueError(
            f"resample needs a full schedule (timesteps 1..{schedule_T.num_timesteps}); "
            f"got {timesteps.shape[0]} timesteps. Resample from make_schedule(T, T) instead."
        )
    if num_steps == schedule_T.num_timesteps:
        return schedule_T
    betas = np.asarray(schedule_T.betas, dtype=np.float64)
    return _schedule_from_betas(betas, num_steps, schedule_T.time_input)
