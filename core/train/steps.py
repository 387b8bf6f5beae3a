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

Gradient accumulation (`grad_accum_steps` M > 1, `accumulate_gradients`): the batch of B is cut
into M microbatches of B / M inside the one jitted step, their gradients and loss parts are
averaged in a `lax.scan` (one microbatch's activations live at a time), then the optimiser makes
ONE update. The paper's loss is a mean of per-example terms, so this is the full-batch gradient
in exact arithmetic (see `accumulate_gradients` for what differs in practice).
"""

from __future__ import annotations

import functools
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
#: The scalars a loss function reports: its value and the parts of `make_loss_fn`.
LOSS_NAMES = ("loss", "loss_ce", "loss_dice", "loss_noise")

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
    dice_absent_classes: str = "include",
) -> Callable[[Any, jax.Array, jax.Array, jax.Array], tuple[jax.Array, dict]]:
    """`loss_fn(params, image, label, key) -> (loss, parts)` with parts `loss_ce`, `loss_dice`,
    `loss_noise` (0 unless noise prediction). image (B, *S, 1) float32, label (B, *S) int32.
    Arguments as in `make_train_step`."""
    _check_options(method, schedule, output)
    num_classes = model.num_classes
    seg_loss = functools.partial(segmentation_loss, dice_absent_classes=dice_absent_classes)

    def unet_loss(params, image, label, key):
        del key
        logits = model.apply({"params": params}, image)
        loss, parts = seg_loss(logits, label, use_dice=use_dice)
        return loss, {**parts, "loss_noise": jnp.zeros((), jnp.float32)}

    def diffusion_loss(params, image, label, key):
        x_t, k, eps = diffusion_input(
            model, params, schedule, image, label, key,
            output=output, recycling=recycling, num_classes=num_classes, clip_x0=clip_x0,
        )
        out = model.apply({"params": params}, image, x_t, model_time(schedule, k))
        if output == "x0":
            loss, parts = seg_loss(out, label, use_dice=use_dice)
            return loss, {**parts, "loss_noise": jnp.zeros((), jnp.float32)}
        # Unclipped whatever clip_x0 says: mask_to_logits floors the probabilities itself.
        x0_hat = x0_from_output(schedule, output, out, x_t, k, clip_x0=False)
        logits = mask_to_logits(x0_hat)
        seg, parts = seg_loss(logits, label, use_dice=use_dice)
        loss_noise = noise_l2(out, eps)
        return seg + noise_loss_weight * loss_noise, {**parts, "loss_noise": loss_noise}

    return unet_loss if method == "unet" else diffusion_loss


def check_grad_accum_steps(grad_accum_steps: int) -> None:
    """Raise a `ValueError` unless `grad_accum_steps` is an int >= 1."""
    if isinstance(grad_accum_steps, bool) or not isinstance(grad_accum_steps, int) or (
        grad_accum_steps < 1
    ):
        raise ValueError(f"grad_accum_steps must be an int >= 1, got {grad_accum_steps!r}")


def check_microbatches(batch_size: int, grad_accum_steps: int) -> None:
    """Raise a `ValueError` naming both numbers unless `grad_accum_steps` (an int >= 1) divides
    `batch_size`: equal microbatches are what makes the mean of their mean losses the mean over
    the whole batch."""
    check_grad_accum_steps(grad_accum_steps)
    if batch_size % grad_accum_steps:
        raise ValueError(
            f"batch size {batch_size} is not divisible by grad_accum_steps {grad_accum_steps} "
            f"(data.batch_size / train.grad_accum_steps must be a whole number of volumes)"
        )


def split_microbatches(x: jax.Array, num_microbatches: int) -> jax.Array:
    """(B, ...) -> (M, B / M, ...) with M = `num_microbatches`; microbatch i holds examples
    i, i + M, i + 2M, ... (strided, not contiguous).

    Why strided: a data-parallel batch is sharded over D devices in contiguous blocks
    (`sharding.batch_sharding`); with B divisible by M * D every strided microbatch takes
    B / (M * D) examples from each device, so the reshape moves no data and every device works
    on every microbatch. (Contiguous microbatches would put microbatch 0 on the first devices
    only.)
    """
    check_microbatches(x.shape[0], num_microbatches)
    per_microbatch = x.shape[0] // num_microbatches
    return jnp.swapaxes(x.reshape(per_microbatch, num_microbatches, *x.shape[1:]), 0, 1)


def accumulate_gradients(
    grad_fn: Callable,
    params: Any,
    image: jax.Array,
    label: jax.Array,
    key: jax.Array,
    num_microbatches: int,
) -> tuple[tuple[jax.Array, dict], Any]:
    """`grad_fn(params, image, label, key)` (= `jax.value_and_grad(loss_fn, has_aux=True)`)
    averaged over M = `num_microbatches` equal microbatches: returns `((loss, parts), grads)`
    in `grad_fn`'s structure, loss and parts () float32, grads shaped like params.

    image (B, *S, 1), label (B, *S); B must divide by M. M = 1 is `grad_fn` on the whole batch
    with `key` itself (no scan, the step of before bit for bit). M > 1: one `lax.scan` over the
    microbatches of `split_microbatches` (one microbatch's activations at a time; the carry is
    one float32 gradient tree); microbatch i gets the key `fold_in(key, i)`.

    With L(X) the loss of a batch X and X_1..X_M equal microbatches of B,
        grad L(B) = (1/M) sum_i grad L(X_i)   and   L(B) = (1/M) sum_i L(X_i)
    hold exactly when L is the mean of per-example terms. The losses here are: cross entropy, a
    mean over batch and voxels (every example has the same voxel count, eq. 6); the foreground
    soft Dice, computed per example and class and then averaged (`soft_dice_loss`: per
    example, not pooled over the batch, eq. 6); the noise L2, a mean over all elements (eq. 7).
    Norm layers are GroupNorm / InstanceNorm (per example, no batch statistics), and recycling's
    x0_hat (eq. 3-5) is a per-example forward pass. So the accumulated gradient is the
    full-batch gradient up to:
      - float32 rounding: the sums over the batch are done in another order;
      - the diffusion draws: k, eps_k and eps_{k'} come from `fold_in(key, i)` per microbatch,
        so for the same key they are other (identically distributed) numbers than the
        full-batch step's. Given the same draws (or for the U-Net, which draws nothing) the
        update is the full-batch update.
    """
    if num_microbatches == 1:
        return grad_fn(params, image, label, key)
    images = split_microbatches(image, num_microbatches)
    labels = split_microbatches(label, num_microbatches)

    def add_microbatch(carry, xs):
        grad_sum, loss_sum = carry
        image_i, label_i, index = xs
        (loss, parts), grads = grad_fn(params, image_i, label_i, jax.random.fold_in(key, index))
        losses = {"loss": loss, **parts}
        grad_sum = jax.tree.map(lambda acc, g: acc + g.astype(acc.dtype), grad_sum, grads)
        loss_sum = {name: loss_sum[name] + losses[name].astype(jnp.float32) for name in loss_sum}
        return (grad_sum, loss_sum), None

    zeros = (
        jax.tree.map(jnp.zeros_like, params),
        {name: jnp.zeros((), jnp.float32) for name in LOSS_NAMES},
    )
    indices = jnp.arange(num_microbatches, dtype=jnp.uint32)
    (grad_sum, loss_sum), _ = jax.lax.scan(add_microbatch, zeros, (images, labels, indices))
    grads = jax.tree.map(lambda g: g / num_microbatches, grad_sum)
    means = {name: value / num_microbatches for name, value in loss_sum.items()}
    loss = means.pop("loss")
    return (loss, means), grads


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
    grad_accum_steps: int = 1,
    dice_absent_classes: str = "include",
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
      grad_accum_steps: M >= 1 microbatches of B / M the batch is cut into (gradient
        accumulation, `accumulate_gradients`); the gradients and loss parts are their means and
        the optimiser updates once, so the step still trains on the batch of B. 1: no
        accumulation. B must divide by M (a `ValueError` naming both when traced).
      dice_absent_classes: "include" | "exclude" (`losses.segmentation.DICE_ABSENT_CLASSES`):
        keep (example, class) pairs whose class is absent from the label in the Dice mean, or
        leave them out as the released code does (then the accumulated gradient is not
        exactly the full-batch one: the loss is a mean over present pairs, not examples).

    `batch` is `{"image": (B, *S, 1) float32, "label": (B, *S) int32}`; `metrics` is a flat dict
    of float32 scalars `METRIC_NAMES` (`grad_norm` is the global norm before clipping). Jit it
    with `donate_argnums=0` (see `loop.compile_train_step`).

    Keys: `key` -> split (augment, loss); loss -> split (k, eps_k, eps_{k'}); the U-Net step
    ignores the loss key. With M > 1 microbatch i uses `fold_in(loss, i)` in place of the loss
    key. The same key therefore reproduces the step exactly.

    Augmentation runs on the whole batch before it is cut into microbatches, so every example
    is augmented exactly as in the step without accumulation (the affine parameters are drawn
    for all B examples from the one augment key). That holds the augmented batch of B in memory
    (B volumes of image and label; not the activations).
    """
    loss_fn = make_loss_fn(
        model, method=method, schedule=schedule, output=output, recycling=recycling,
        use_dice=use_dice, noise_loss_weight=noise_loss_weight, clip_x0=clip_x0,
        dice_absent_classes=dice_absent_classes,
    )
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    check_grad_accum_steps(grad_accum_steps)

    def train_step(state: TrainState, batch: dict, key: jax.Array) -> tuple[TrainState, dict]:
        key_augment, key_loss = jax.random.split(key)
        image, label = batch["image"], batch["label"]
        if augment is not None:
            image, label = augment(key_augment, image, label)
        (loss, parts), grads = accumulate_gradients(
            grad_fn, state.params, image, label, key_loss, grad_accum_steps
        )
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
