"""Config -> core objects: one pure function per object a trial needs.

Every function reads only the config sections it names and builds the same object for the same
config, so `trial.run_trial` (and a notebook) can assemble a run from them; the names read
with the module's:

    from diffseg3d.experiments.trial import build

    net = build.model(config, num_classes)
    tx, lr_schedule = build.optimizer(config)
    step = build.train_step(config, net, tx, lr_schedule, spacing)
    predict = build.predictor(config, net, num_classes)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from diffseg3d.core.data.augment import random_affine
from diffseg3d.core.data.augment_presets import augment_spacing
from diffseg3d.core.diffusion.schedule import Schedule, make_schedule
from diffseg3d.core.infer.predict import predict_unet
from diffseg3d.core.infer.sampling import make_sampler
from diffseg3d.core.models.architecture import build_network
from diffseg3d.core.train.optimizer import make_optimizer
from diffseg3d.core.train.steps import check_microbatches, make_train_step
from diffseg3d.experiments.config.schema import Config

#: `predict(params, image (B, *S, 1), key) -> label map (B, *S)`.
Predictor = Callable[[object, jax.Array, jax.Array], jax.Array]


def model(config: Config, num_classes: int) -> nn.Module:
    """The network of `config.model.architecture` (`core.models.architecture.build_network`)
    with `num_classes` outputs (background included); its `diffusion` flag (noisy-mask and time
    inputs) is on for `config.method == "diffusion"`, its time scale from
    `diffusion.time_input`."""
    m = config.model
    return build_network(
        m.architecture,
        num_classes=num_classes,
        channels=tuple(m.channels),
        num_res_blocks=m.num_res_blocks,
        norm=m.norm,
        diffusion=config.method == "diffusion",
        conv_impl=m.conv_impl,
        remat=m.remat,
        dtype=jnp.bfloat16 if m.compute_dtype == "bfloat16" else jnp.float32,
        time_input=config.diffusion.time_input,
    )


def schedule(config: Config, num_steps: int) -> Schedule:
    """The schedule of `config.diffusion` resampled to K = `num_steps` steps (paper 3.4): K is
    `diffusion.train_steps` for training and `diffusion.sample_steps` for sampling."""
    d = config.diffusion
    return make_schedule(num_timesteps=d.num_timesteps, num_steps=num_steps, kind=d.beta_schedule,
                         time_input=d.time_input)


def augment(config: Config, spacing: Sequence[float] | None = None) -> Callable | None:
    """`augment(key, image, label)` bound to `config.data`'s ranges, or None when
    `data.augment` is off; rotations are rigid in mm for the data set's voxel `spacing` or act
    on the voxel grid (`data.augment_space`), translations limited to keep each example's
    foreground inside with `data.limit_translation`."""
    d = config.data
    if not d.augment:
        return None
    return functools.partial(
        random_affine,
        max_rotation=tuple(d.max_rotation),
        max_translation=tuple(d.max_translation),
        max_scale=tuple(d.max_scale),
        isotropic_scale=d.isotropic_scale,
        spacing=augment_spacing(d.augment_space, spacing),
        limit_translation=d.limit_translation,
    )


def optimizer(config: Config) -> tuple[optax.GradientTransformation, Callable]:
    """(AdamW after global-norm clipping, its warmup + cosine learning-rate schedule) of
    `config.optim` over `config.train.steps` steps."""
    o = config.optim
    return make_optimizer(
        o.learning_rate, o.warmup_steps, config.train.steps, o.weight_decay, o.grad_clip_norm,
        init_lr=o.init_lr, decay_steps=o.decay_steps, end_lr=o.end_lr,
    )


def train_step(
    config: Config,
    model: nn.Module,
    tx: optax.GradientTransformation,
    lr_schedule: Callable,
    spacing: Sequence[float] | None = None,
) -> Callable:
    """The pure `train_step(state, batch, key) -> (state, metrics)` of `config.method`, losses
    of `config.loss` and, for diffusion, the K = `diffusion.train_steps` schedule, output
    parameterisation and recycling (paper 3.2) of `config.diffusion`; not jitted.

    The batch of `data.batch_size` is trained on in `train.grad_accum_steps` microbatches with
    one optimiser update (`steps.accumulate_gradients`); a batch size they do not divide is a
    `ValueError` naming both, here, before anything is compiled."""
    diffusion = config.method == "diffusion"
    check_microbatches(config.data.batch_size, config.train.grad_accum_steps)
    return make_train_step(
        model,
        tx,
        lr_schedule,
        method=config.method,
        schedule=schedule(config, config.diffusion.train_steps) if diffusion else None,
        output=config.diffusion.output,
        recycling=config.diffusion.recycling,
        use_dice=config.loss.dice,
        noise_loss_weight=config.loss.noise_weight,
        clip_x0=config.diffusion.clip_x0,
        augment=augment(config, spacing),
        grad_accum_steps=config.train.grad_accum_steps,
        dice_absent_classes=config.loss.dice_absent_classes,
    )


def predictor(config: Config, model: nn.Module, num_classes: int) -> Predictor:
    """`predict(params, image (B, *S, 1), key) -> label map (B, *S)`: the K-step sampler of
    `config.diffusion` (K = `diffusion.sample_steps`) for diffusion, one forward pass and argmax
    for the U-Net (which ignores `key`)."""
    if config.method == "unet":
        return lambda params, image, key: predict_unet(model, params, image)
    sample = sampler(config, model, num_classes)
    return lambda params, image, key: sample(params, image, key)


def sampler(config: Config, model: nn.Module, num_classes: int) -> Callable:
    """`infer.make_sampler`'s `sample(params, image, key, return_trajectory=False)` of
    `config.diffusion` (K = `diffusion.sample_steps`, its sampler, variance, output, clip_x0)."""
    d = config.diffusion
    return make_sampler(
        model,
        schedule(config, d.sample_steps),
        output=d.output,
        variance=d.variance,
        method=d.sampler,
        num_classes=num_classes,
        clip_x0=d.clip_x0,
    )
