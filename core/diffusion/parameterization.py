"""What the network predicts, and the clean-mask estimate x0_hat read off its output.

The one place that turns a diffusion U-Net's output into x0_hat; training (the recycling
prediction, `core.train.steps`), recycling (`recycling.x0_predictor_from_eps`) and the sampler
(`core.infer.sampling`) all call `x0_from_output`, so they cannot disagree on it.

    "x0"  (mask prediction):  the output is logits,  x0_hat = 2 softmax(logits) - 1   (paper 3.1)
    "eps" (noise prediction): the output is eps_hat, x0_hat = (x_k - sqrt(1 - abar_k) eps_hat)
                                                              / sqrt(abar_k)          (eq. 10)

Clipping x0_hat to [-1, 1] only matters for noise prediction (a softmax is already in range).
The authors' released configuration (ImgX-DiffSeg, `x_limit: 0.0`) does *not* clip;
improved DDPM (`clip_denoised=True`) does. `clip_x0=True` is this project's default so that
its recorded tables stay reproducible; set it to False to follow the released configuration.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from diffseg3d.core.diffusion.gaussian import posterior_variance, x0_from_eps
from diffseg3d.core.diffusion.mask import logits_to_mask
from diffseg3d.core.diffusion.schedule import Schedule

#: Network parameterisations: mask prediction (logits of x0) or noise prediction (eps).
OUTPUTS = ("x0", "eps")


def check_output(output: str) -> None:
    """Raise a ValueError naming `output` unless it is one of `OUTPUTS`."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")


def noise_head_shortfall(output: str, head_features: int | None, num_classes: int) -> str | None:
    """Why a noise-predicting network with this head cannot work, or None when it can.

    The U-Net's head is linear from `head_features` (its `channels[0]`) to the C = `num_classes`
    outputs, so the raw output lies in a `head_features`-dimensional subspace at every voxel.
    With fewer features than classes (the quick profile: 8 for the phantom's 9), the noise along
    the subspace's normal n, n.eps ~ N(0, 1), cannot be predicted, and eq. 10 multiplies it by
    sqrt((1 - abar_k) / abar_k): 157 at t = T, 17 at t = 750 for the linear schedule.
    Mask prediction needs only C - 1 features (softmax ignores a shift of all logits), so it
    returns None for "x0"; also None when `head_features` is unknown.
    """
    if output != "eps" or head_features is None or head_features >= num_classes:
        return None
    return (
        f"noise prediction with a head of {head_features} features for {num_classes} classes: "
        f"the network's {num_classes} noise outputs span only {head_features} directions, so "
        "x0 from eq. 10 carries the unpredictable rest times sqrt((1 - abar)/abar) (157 at t = T "
        f"for the linear schedule); use model.channels[0] >= {num_classes} "
        "(docs/NOISE_PREDICTION.md)"
    )


#: `noise_last_step_shortfall` speaks when the noise the step to k = 0 adds has a standard
#: deviation more than this many times the most the k = 0 step can take out per unit of eps_hat.
LAST_STEP_RATIO = 10.0


def noise_last_step_shortfall(
    output: str, schedule: Schedule, variance: str, method: str = "ddpm"
) -> str | None:
    """Why DDPM sampling with this variance leaves noise in a noise model's label, or None.

    The sampler's label is argmax of the last x0_hat, from x_0 at step k = 0. For noise
    prediction that is (x_0 - sqrt(1 - abar_0) eps_hat) / sqrt(abar_0) (eq. 10): the last step
    moves x_0 by sqrt(1 - abar_0) eps_hat, 0.01 eps_hat for the linear schedule, so the noise
    the step before it added, sqrt(var_1) z, stays in the label. "fixed_large" sets
    var_1 = beta_1 of the schedule, which resampling to K = 5 steps makes 0.479 (std 0.69);
    "fixed_small" sets beta_tilde_1 = 1e-4 (std 0.01). Mask prediction re-predicts x0 from
    the image at k = 0, and DDIM adds no noise, so both return None; so does K = 1.
    """
    if output != "eps" or method != "ddpm" or schedule.num_steps < 2:
        return None
    std_last = math.sqrt(float(posterior_variance(schedule, jnp.array([1]), variance)[0]))
    reach = math.sqrt(float(schedule.one_minus_alphas_cumprod[0]))
    if std_last <= LAST_STEP_RATIO * reach:
        return None
    return (
        f"noise prediction sampled by DDPM with variance {variance} over K = "
        f"{schedule.num_steps} steps: the step to k = 0 adds noise of std {std_last:.3g}, and "
        f"the last step can move x by only {reach:.3g} eps_hat (eq. 10), so that noise stays in "
        "the label; sample with diffusion.variance fixed_small or the ddim sampler "
        "(docs/NOISE_PREDICTION.md)"
    )


def x0_from_output(
    schedule: Schedule,
    output: str,
    net_out: jnp.ndarray,
    x_t: jnp.ndarray,
    k: jnp.ndarray,
    *,
    clip_x0: bool = True,
) -> jnp.ndarray:
    """x0_hat (batch, *spatial, C) float32 from the network output at step k.

    Args:
        schedule: the diffusion schedule.
        output: "x0" (net_out are logits; x0_hat = 2 softmax - 1, always in [-1, 1]) or "eps"
            (net_out is eps_hat; x0_hat by eq. 10).
        net_out: (batch, *spatial, C) network output (any float dtype; computed in float32).
        x_t: (batch, *spatial, C) the noisy mask the network saw.
        k: (batch,) step indices.
        clip_x0: clip the eq. 10 estimate to the mask range [-1, 1] (noise prediction only; see
            the module docstring for who clips).

    Returns:
        (batch, *spatial, C) float32 x0_hat.
    """
    check_output(output)
    if output == "x0":
        return logits_to_mask(net_out)
    x0_hat = x0_from_eps(schedule, x_t, k, net_out.astype(jnp.float32))
    return jnp.clip(x0_hat, -1.0, 1.0) if clip_x0 else x0_hat
