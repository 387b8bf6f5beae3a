"""Recycling (paper 3.2): build the training input x_k from the model's own prediction.

Mask prediction (eq. 3-5), for a sampled step index k and k' = min(k + 1, K - 1):

    x_{k'}  = sqrt(abar_{k'}) x0 + sqrt(1 - abar_{k'}) eps'         (eq. 3, ground truth x0)
    x0_hat  = StopGradient(x0_theta(I, t_{k'}, x_{k'}))             (eq. 4)
    x_k     = sqrt(abar_k) x0_hat + sqrt(1 - abar_k) eps            (eq. 5, fresh noise eps)

Noise prediction (supplementary eq. 8-11) is the same with eq. 4 replaced by

    eps_hat = StopGradient(eps_theta(I, t_{k'}, x_{k'}))            (eq. 9)
    x0_hat  = (x_{k'} - sqrt(1 - abar_{k'}) eps_hat) / sqrt(abar_{k'})   (eq. 10)

so `recycled_noisy_mask` only needs a `predict_x0`; `x0_predictor_from_eps` builds one from a
noise-predicting model via eq. 10 (`parameterization.x0_from_output`, clipped to [-1, 1] unless
`clip_x0=False`, the same setting the sampler must get). At the last step (k = K - 1, t = T)
the paper uses t + 1 = T, i.e. k' = K - 1. Recycling is always on when enabled (no
probability, paper 3.2).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from diffseg3d.core.diffusion.gaussian import q_sample
from diffseg3d.core.diffusion.parameterization import x0_from_output
from diffseg3d.core.diffusion.schedule import Schedule

#: (x_t (batch, *spatial, C), k (batch,)) -> x0_hat (batch, *spatial, C) (in [-1, 1] for mask
#: prediction or clipped noise prediction).
Predictor = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def next_step_index(schedule: Schedule, k: jnp.ndarray) -> jnp.ndarray:
    """k' = min(k + 1, K - 1): the step whose prediction is recycled into step k."""
    return jnp.minimum(k + 1, schedule.num_steps - 1)


def recycled_noisy_mask(
    predict_x0: Predictor,
    schedule: Schedule,
    x0: jnp.ndarray,
    k: jnp.ndarray,
    noise_next: jnp.ndarray,
    noise: jnp.ndarray,
) -> jnp.ndarray:
    """Noisy mask x_k built from the stop-gradient prediction at k' = min(k + 1, K - 1) (eq. 3-5).

    Args:
        predict_x0: (x_t, k) -> x0_hat mask; usually the model applied to the current params and
            image (closing over them), e.g. `logits_to_mask(model.apply(params, image, x_t,
            model_time(schedule, k)))`, or `x0_predictor_from_eps(...)` for noise prediction.
        schedule: the diffusion schedule.
        x0: (batch, *spatial, C) ground-truth mask in [-1, 1].
        k: (batch,) step indices in [0, K).
        noise_next: (batch, *spatial, C) standard normal noise for x_{k'} (eq. 3).
        noise: (batch, *spatial, C) independent standard normal noise for x_k (eq. 5); return it
            to the caller's noise loss for noise prediction.

    Returns:
        (batch, *spatial, C) x_k; no gradient flows into predict_x0's parameters through it.
    """
    k_next = next_step_index(schedule, k)
    x_next = q_sample(schedule, x0, k_next, noise_next)
    x0_hat = jax.lax.stop_gradient(predict_x0(x_next, k_next))
    return q_sample(schedule, x0_hat, k, noise)


def x0_predictor_from_eps(
    predict_eps: Predictor, schedule: Schedule, *, clip_x0: bool = True
) -> Predictor:
    """Wraps a noise predictor (x_t, k) -> eps_hat into an x0 predictor via eq. 10.

    `clip_x0` as in `parameterization.x0_from_output`; pass the sampler's setting so that the
    recycled x0_hat in training is the x0_hat the sampler forms at test time.
    """

    def predict_x0(x_t: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
        return x0_from_output(schedule, "eps", predict_eps(x_t, k), x_t, k, clip_x0=clip_x0)

    return predict_x0
