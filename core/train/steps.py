"""Pure training steps `(state, batch, key) -> (state, metrics)` for the three trained methods.

(a) `method="unet"`: the supervised U-Net; loss = CE + Dice on its logits (paper 3.3).
(b) `method="diffusion"`, `recycling=False`: per example a step index k ~ U{0..K-1}, the ground
    truth x0 = 2 onehot - 1 is noised to x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) eps, and the
    network sees (image, x_k, t_k / T).
(c) `recycling=True` (paper 3.2, eq. 3-5; supplementary eq. 8-11 for noise): x_k is built from
    the model's own stop-gradient prediction at k' = min(k + 1, K - 1) (same parameters) instead
    of the ground truth; see `diffusion.recycling.recycled_noisy_mask`.

Outputs: `output="x0"` (mask prediction) treats the network output as logits, x0_hat =
2 softmax - 1, loss = CE + Dice on the logits (eq. 6). `output="eps"` (noise prediction) adds
`noise_loss_weight` (0.1, paper section 4) times L2(eps_hat, eps) (eq. 7) to CE + Dice on
`mask_to_logits(x0_hat)` with x0_hat from eq. 10 (unclipped: `mask_to_logits` floors the
probabilities itself) -- the design card's "noise prediction adds
0.1 * L2 on eps". This is also what ImgX-DiffSeg does (its `get_loss_logits_metrics`: the
segmentation loss on logits of the x_start predicted from the noise, plus `mse` weight times the
MSE on the noise). The recycled x0_hat (c) comes from `diffusion.x0_from_output` with the
`clip_x0` setting that the sampler must also get.

Randomness: the caller passes `fold_in(base_key, step)`; the step splits it into independent
keys for augmentation, k, eps_{k'} and eps_k, so no key is used for two draws.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from diffseg3d.core.diffusion import (
    check_output,
    label_to_mask,
    mask_to_logits,
    model_time,
    q_sample,
    recycled_noisy_mask,
    x0_from_output,
)
from diffseg3d.core.diffusion.schedule import Schedule
from diffseg3d.core.losses.noise import noise_l2
from diffseg3d.core.losses.segmentation import segmentation_loss
from diffseg3d.core.train.state import TrainState

METHODS = ("unet", "diffusion")
METRIC_NAMES = ("loss", "loss_ce", "loss_dice", "loss_noise", "grad_norm", "lr")

#: `augment(key, image, label) -> (image, label)`, jittable and batched, e.g. a partial of
#: `diffseg3d.core.data.augment.random_affine` with its ranges bound.
Augment = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def _check_options(method, schedule, output) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    check_output(output)
    if method == "diffusion" and schedule is None:
        raise ValueError("method='diffusion' needs a schedule (diffusion.make_schedule(...))")


def _x0_predictor(
    model: nn.Module,
    params: Any,
    image: jax.Array,
    schedule: Schedule,
    output: str,
    clip_x0: bool,
) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """(x_t, k) -> x0_hat (batch, *spatial, C) from the network at `params`, formed exactly as
    the sampler forms it (`diffusion.x0_from_output` with the same `clip_x0`)."""

    def predict_x0(x_t: jax.Array, k: jax.Array) -> jax.Array:
        out = model.apply({"params": params}, image, x_t, model_time(schedule, k))
        return x0_from_output(schedule, output, out, x_t, k, clip_x0=clip_x0)

    return predict_x0


def diffusion_input(
    model: nn.Module,
    params: Any,
    schedule: Schedule,
    image: jax.Array,
    label: jax.Array,
    key: jax.Array,
    *,
    output: str,
    recycling: bool,
    num_classes: int,
    clip_x0: bool = True,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Sample `(x_t, k, eps)` for one diffusion training step.

    Shapes: x_t and eps (batch, *spatial, C), k (batch,) int32 uniform in [0, K). Without
    recycling x_t = q_sample(x0, k, eps); with recycling x_t = q_sample(x0_hat, k, eps) where
    x0_hat is the stop-gradient prediction of the *same* params from q_sample(x0, k', eps')
    (eq. 3-5 / 8-11), formed with `clip_x0` as in `diffusion.x0_from_output`. eps is what a
    noise-predicting network must recover.
    """
    key_k, key_eps, key_eps_next = jax.random.split(key, 3)
    x0 = label_to_mask(label, num_classes)
    k = jax.random.randint(key_k, (x0.shape[0],), 0, schedule.num_steps, dtype=jnp.int32)
    eps = jax.random.normal(key_eps, x0.shape, jnp.float32)
    if not recycling:
        return q_sample(schedule, x0, k, eps), k, eps
    eps_next = jax.random.normal(key_eps_next, x0.shape, jnp.float32)
    frozen = jax.lax.stop_gradient(params)
    predict = _x0_predictor(model, frozen, image, schedule, output, clip_x0)
    return recycled_noisy_mask(predict, schedule, x0, k, eps_next, eps), k, eps


def make_loss_fn(
    model: nn.Module,
    *,
    method: str = "unet",
    schedule: Schedule | None = None,
    output: str = "x0",
    recycling: bool = False,
    use_dice: bool = True,
    noise_loss_weight: float = 0.1,
    clip_x0: bool = True,
) -> Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, dict]]:
    """`loss_fn(params, image, label, key) -> (loss, parts)` with parts `loss_ce`, `loss_dice`,
    `loss_noise` (0 unless noise prediction). image (B, *S, 1) float32, label (B, *S) int32.
    Arguments as in `make_train_step`."""
    _check_options(method, schedule, output)
    num_classes = model.num_classes

    def unet_loss(params, image, label, key):
        del key
        logits = model.apply({"params": params}, image)
        loss, parts = segmentation_loss(logits, label, use_dice=use_dice)
        return loss, {**parts, "loss_noise": jnp.zeros((), jnp.float32)}

    def diffusion_loss(params, image, label, key):
        x_t, k, eps = diffusion_input(
            model, params, schedule, image, label, key,
            output=output, recycling=recycling, num_classes=num_classes, clip_x0=clip_x0,
        )
        out = model.apply({"params": params}, image, x_t, model_time(schedule, k))
        if output == "x0":
            loss, parts = segmentation_loss(out, label, use_dice=use_dice)
            return loss, {**parts, "loss_noise": jnp.zeros((), jnp.float32)}
        # Unclipped whatever clip_x0 says: mask_to_logits floors the probabilities itself.
        x0_hat = x0_from_output(schedule, output, out, x_t, k, clip_x0=False)
        logits = mask_to_logits(x0_hat)
        seg, parts = segmentation_loss(logits, label, use_dice=use_dice)
        loss_noise = noise_l2(out, eps)
        return seg + noise_loss_weight * loss_noise, {**parts, "loss_noise": loss_noise}

    return unet_loss if method == "unet" else diffusion_loss


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    lr_schedule: Callable,
    *,
    method: str = "unet",
    schedule: Schedule | None = None,
    output: str = "x0",
    recycling: bool = False,
    use_dice: bool = True,
    noise_loss_weight: float = 0.1,
    clip_x0: bool = True,
    augment: Augment | None = None,
) -> Callable[[TrainState, dict, jax.Array], tuple[TrainState, dict]]:
    """Build a pure `train_step(state, batch, key) -> (state, metrics)`.

    Args:
      model: the U-Net (`diffusion=False` for method "unet", True otherwise).
      tx: optimiser from `optimizer.make_optimizer`.
      lr_schedule: its schedule; `metrics["lr"] = lr_schedule(state.step)` (the rate this step
        used).
      method: "unet" (supervised) or "diffusion".
      schedule: the K-step diffusion schedule (training steps K; 5 or 1000 in the paper).
      output: "x0" (mask prediction, network outputs logits) or "eps" (noise prediction).
      recycling: build x_t from the model's own prediction (paper 3.2), always on when True.
      use_dice: add the foreground Dice loss to the cross entropy (Table 3b).
      noise_loss_weight: weight of L2(eps_hat, eps) for noise prediction (paper: 0.1).
      clip_x0: clip the recycled noise-prediction x0_hat (eq. 10) to [-1, 1]; give the sampler
        (`infer.make_sampler`) the same value. The released ImgX-DiffSeg config does not clip.
      augment: optional on-device augmentation `augment(key, image, label)`.

    `batch` is `{"image": (B, *S, 1) float32, "label": (B, *S) int32}`; `metrics` is a flat dict
    of float32 scalars `METRIC_NAMES` (`grad_norm` is the global norm before clipping). Jit it
    with `donate_argnums=0` (see `loop.compile_train_step`).

    Keys: `key` -> split (augment, loss); loss -> split (k, eps_k, eps_{k'}); the U-Net step
    ignores the loss key. The same key therefore reproduces the step exactly.
    """
    loss_fn = make_loss_fn(
        model, method=method, schedule=schedule, output=output, recycling=recycling,
        use_dice=use_dice, noise_loss_weight=noise_loss_weight, clip_x0=clip_x0,
    )
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def train_step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        key_augment, key_loss = jax.random.split(key)
        image, label = batch["image"], batch["label"]
        if augment is not None:
            image, label = augment(key_augment, image, label)
        (loss, parts), grads = grad_fn(state.params, image, label, key_loss)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {
            "loss": loss,
            **parts,
            "grad_norm": optax.global_norm(grads),
            "lr": jnp.asarray(lr_schedule(state.step)),
        }
        metrics = {name: metrics[name].astype(jnp.float32) for name in METRIC_NAMES}
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    return train_step
