"""diffseg3d.core.diffusion: schedules (paper 3.4), Gaussian diffusion maths (eq. 1, 2, 10),
masks in [-1, 1], network output -> x0_hat (x0 or eps prediction) and recycling (eq. 3-5,
8-11)."""

from diffseg3d.core.diffusion.gaussian import (
    VARIANCE_KINDS,
    eps_from_x0,
    model_time,
    posterior_log_variance,
    posterior_mean_eps,
    posterior_mean_x0,
    posterior_variance,
    q_sample,
    x0_from_eps,
)
from diffseg3d.core.diffusion.mask import (
    label_to_mask,
    logits_to_mask,
    mask_to_label,
    mask_to_logits,
)
from diffseg3d.core.diffusion.parameterization import OUTPUTS, check_output, x0_from_output
from diffseg3d.core.diffusion.recycling import (
    next_step_index,
    recycled_noisy_mask,
    x0_predictor_from_eps,
)
from diffseg3d.core.diffusion.schedule import (
    SCHEDULE_KINDS,
    Schedule,
    base_betas,
    make_schedule,
    resample,
    resampled_timesteps,
)

__all__ = [
    "OUTPUTS",
    "SCHEDULE_KINDS",
    "VARIANCE_KINDS",
    "Schedule",
    "base_betas",
    "check_output",
    "eps_from_x0",
    "label_to_mask",
    "logits_to_mask",
    "make_schedule",
    "mask_to_label",
    "mask_to_logits",
    "model_time",
    "next_step_index",
    "posterior_log_variance",
    "posterior_mean_eps",
    "posterior_mean_x0",
    "posterior_variance",
    "q_sample",
    "recycled_noisy_mask",
    "resample",
    "resampled_timesteps",
    "x0_from_eps",
    "x0_from_output",
    "x0_predictor_from_eps",
]
