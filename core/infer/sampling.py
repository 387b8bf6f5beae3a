"""K-step reverse diffusion for segmentation, in one jitted `lax.scan` (paper 3.1, Fig. 1).

Starting from x_K ~ N(0, I), for k = K-1, ..., 0 (0-based rows of the schedule):

1. the network sees (image, x_k, t_k / T) -- the original time, never k;
2. x0_hat = 2 softmax(logits) - 1 (mask prediction) or eq. 10 from eps_hat (noise prediction),
   clipped to [-1, 1] if `clip_x0` (`diffusion.x0_from_output`, shared with training);
3. DDPM: x_{k-1} = mu(x0_hat, x_k) + sqrt(var_k) z by eq. 1, with no noise at k = 0;
   DDIM (eta = 0): x_{k-1} = sqrt(abar_{k-1}) x0_hat + sqrt(1 - abar_{k-1}) eps_hat;
4. the label is argmax over classes of the last x0_hat.

Noise prediction uses eq. 1 with x0_hat rather than eq. 2: without clipping the two are the same
number (eq. 2 = eq. 1 with x0 from eq. 10). With `clip_x0=True` (this project's default, as
improved DDPM's `clip_denoised=True`) every step stays on the mask range [-1, 1] that the network
saw in training; the authors' released configuration (ImgX-DiffSeg, `x_limit: 0.0`) does not
clip, which is `clip_x0=False`. Give training (`train.make_train_step`) the same value, since
recycling forms its x0_hat the same way. The variance is "fixed_large" by default (the paper's
code) or "fixed_small" (see `diffusion.posterior_variance`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from diffseg3d.core.diffusion import (
    VARIANCE_KINDS,
    check_output,
    eps_from_x0,
    mask_to_label,
    model_time,
    posterior_mean_x0,
    posterior_variance,
    x0_from_output,
)
from diffseg3d.core.diffusion.parameterization import (
    noise_head_shortfall,
    noise_last_step_shortfall,
)
from diffseg3d.core.diffusion.schedule import Schedule

SAMPLERS = ("ddpm", "ddim")


def _ddim_step(schedule: Schedule, x0_hat, x_t, k):
    """Deterministic DDIM update (eta = 0) with eps implied by x0_hat (clipped or not)."""
    eps_hat = eps_from_x0(schedule, x_t, k, x0_hat)
    abar_prev = schedule.alphas_cumprod_prev[k].reshape((-1,) + (1,) * (x_t.ndim - 1))
    return jnp.sqrt(abar_prev) * x0_hat + jnp.sqrt(1.0 - abar_prev) * eps_hat


def make_sampler(
    model: nn.Module,
    schedule: Schedule,
    output: str = "x0",
    variance: str = "fixed_large",
    method: str = "ddpm",
    num_classes: int | None = None,
    *,
    clip_x0: bool = True,
) -> Callable[..., Any]:
    """Build `sample(params, image, key, return_trajectory=False)`.

    Args:
      model: a diffusion U-Net `model(image, x_t, t)`.
      schedule: the K-step sampling schedule (paper: K = 5, resampled from T = 1000).
      output: what the network predicts, "x0" (logits of the mask) or "eps".
      variance: "fixed_large" | "fixed_small" for DDPM (ignored by DDIM).
      method: "ddpm" (stochastic, the paper) or "ddim" (eta = 0, deterministic given x_K).
      num_classes: mask channels C; defaults to `model.num_classes`.
      clip_x0: clip the noise-prediction x0_hat (eq. 10) to [-1, 1] at every step; use the
        value training used (`train.make_train_step(clip_x0=...)`).

    Noise prediction warns when its head is narrower than the classes
    (`diffusion.parameterization.noise_head_shortfall`: such a head cannot output the noise) and
    when the DDPM variance leaves more noise in x_0 than its last step can remove
    (`noise_last_step_shortfall`: "fixed_large" with K = 5 resampled steps).

    `sample` takes image (B, *S, 1) and returns the label (B, *S) int32, or with
    `return_trajectory=True` `(label, x0_hats)` where x0_hats (K, B, *S, C) float32 holds the
    x0_hat of every step in sampling order (row 0 is from x_K at t_K = T, the last row gives the
    label). One jitted `lax.scan`: no host round trip between steps; one key -> same result.
    """
    check_output(output)
    if method not in SAMPLERS:
        raise ValueError(f"sampler method must be one of {SAMPLERS}, got {method!r}")
    if variance not in VARIANCE_KINDS:
        raise ValueError(f"variance must be one of {VARIANCE_KINDS}, got {variance!r}")
    num_classes = model.num_classes if num_classes is None else num_classes
    widths = getattr(model, "channels", None)
    for shortfall in (noise_head_shortfall(output, widths[0] if widths else None, num_classes),
                      noise_last_step_shortfall(output, schedule, variance, method)):
        if shortfall is not None:
            warnings.warn(shortfall, stacklevel=2)
    num_steps = schedule.num_steps

    def run(params, image, key, keep_trajectory):
        batch = image.shape[0]
        shape = (*image.shape[:-1], num_classes)
        key_init, key_steps = jax.random.split(key)
        x_last = jax.random.normal(key_init, shape, jnp.float32)

        def body(carry, k_scalar):
            x_t, _ = carry
            k = jnp.full((batch,), k_scalar, jnp.int32)
            out = model.apply({"params": params}, image, x_t, model_time(schedule, k))
            x0_hat = x0_from_output(schedule, output, out, x_t, k, clip_x0=clip_x0)
            if method == "ddim":
                x_prev = _ddim_step(schedule, x0_hat, x_t, k)
            else:
                mean = posterior_mean_x0(schedule, x0_hat, x_t, k)
                var = posterior_variance(schedule, k, variance, ndim=x_t.ndim)
                z = jax.random.normal(jax.random.fold_in(key_steps, k_scalar), shape)
                # No noise on the final step: x_{-1} would be the sample itself.
                x_prev = mean + jnp.where(k_scalar > 0, jnp.sqrt(var), 0.0) * z
            # The last x0_hat rides in the carry so that, without a trajectory, nothing of
            # size K x volume is kept.
            return (x_prev, x0_hat), (x0_hat if keep_trajectory else None)

        ks = jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32)
        (_, x0_final), x0_hats = jax.lax.scan(body, (x_last, jnp.zeros(shape)), ks)
        label = mask_to_label(x0_final)
        return (label, x0_hats) if keep_trajectory else label

    run_jit = jax.jit(run, static_argnames="keep_trajectory")

    def sample(params: Any, image: jax.Array, key: jax.Array, return_trajectory: bool = False):
        if image.ndim < 3:
            raise ValueError(f"image must be (batch, *spatial, 1), got shape {image.shape}")
        return run_jit(params, image, key, keep_trajectory=bool(return_trajectory))

    return sample
