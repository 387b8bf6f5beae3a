"""Segmentation losses on logits (paper 3.3): cross entropy + foreground-only soft Dice.

Shapes: logits (batch, *spatial, C) with C classes including background; label (batch, *spatial)
int with 0 = background. Losses are computed in float32 whatever the compute dtype (bfloat16
logits are upcast first) so that sums over 10^6 voxels stay accurate.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

#: `loss.dice_absent_classes`: what the soft Dice does with a class absent from an example's
#: label. "include" (this project's default): the pair (example, class) stays in the mean with
#: its smoothed loss (about 1 while the prediction is not exactly empty, 0 when it is).
#: "exclude" (the released code, ImgX-DiffSeg v0.1.0 `imgx/loss/dice.py:30-57`: NaN where
#: `sum(mask_true) == 0`, then `jnp.nanmean(loss[:, 1:])`): only the (example, class) pairs
#: present in the label are averaged, so absent classes do not dilute the present ones.
DICE_ABSENT_CLASSES = ("include", "exclude")

#: Smoothing added to the numerator and denominator of the soft Dice. It makes a class absent from
#: both the label and the (near-zero) prediction of a sample score Dice ~ 1 instead of 0/0, and is
#: small enough (relative to voxel counts) not to bias classes that are present.
DICE_SMOOTHING = 1e-5


def cross_entropy(logits: jnp.ndarray, label: jnp.ndarray) -> jnp.ndarray:
    """Mean over batch and voxels of -log softmax(logits)[label].

    Args:
        logits: (batch, *spatial, C).
        label: (batch, *spatial) int in [0, C).

    Returns:
        () float32.

    Written with a one-hot mask rather than ``optax.softmax_cross_entropy_with_integer_labels``:
    that one gathers with ``take_along_axis``, whose gradient is a scatter over index arrays
    the size of the volume that XLA constant-folds at compile time (a large share of a
    paper-size step's compile time on the CPU).
    """
    logits = logits.astype(jnp.float32)
    onehot = jax.nn.one_hot(label, logits.shape[-1], dtype=jnp.float32)
    per_voxel = -jnp.sum(onehot * jax.nn.log_softmax(logits, axis=-1), axis=-1)
    return jnp.mean(per_voxel)


def soft_dice_loss(
    logits: jnp.ndarray,
    label: jnp.ndarray,
    include_background: bool = False,
    absent_classes: str = "include",
) -> jnp.ndarray:
    """1 - soft Dice on softmax(logits), averaged over batch and (foreground) classes.

    Per sample b and class c, with p = softmax(logits), y = onehot(label), sums over voxels:
        loss_bc = 1 - (2 sum(p y) + s) / (sum p + sum y + s),   s = DICE_SMOOTHING.

    Args:
        logits: (batch, *spatial, C).
        label: (batch, *spatial) int in [0, C).
        include_background: also average over class 0 (the paper's loss excludes it).
        absent_classes: "include": the mean over all (b, c); "exclude": the mean over the
            (b, c) with class c present in label b only (`DICE_ABSENT_CLASSES`), 0 when no
            (b, c) is present (the released code gives NaN there). With "exclude" the loss is
            not a mean of per-example terms (the count of present pairs weights them), so
            gradient accumulation over microbatches is not exactly the full-batch gradient.

    Returns:
        () float32.
    """
    if absent_classes not in DICE_ABSENT_CLASSES:
        raise ValueError(
            f"dice_absent_classes must be one of {DICE_ABSENT_CLASSES}, got {absent_classes!r}"
        )
    num_classes = logits.shape[-1]
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    onehot = jax.nn.one_hot(label, num_classes, dtype=jnp.float32)
    spatial_axes = tuple(range(1, logits.ndim - 1))
    intersection = jnp.sum(probs * onehot, axis=spatial_axes)  # (batch, C)
    denominator = jnp.sum(probs, axis=spatial_axes) + jnp.sum(onehot, axis=spatial_axes)
    dice = (2.0 * intersection + DICE_SMOOTHING) / (denominator + DICE_SMOOTHING)
    present = jnp.sum(onehot, axis=spatial_axes) > 0  # (batch, C)
    if not include_background:
        if num_classes < 2:
            raise ValueError("foreground-only Dice needs at least 2 classes (background + 1).")
        dice = dice[:, 1:]
        present = present[:, 1:]
    if absent_classes == "include":
        return jnp.mean(1.0 - dice)
    weight = present.astype(jnp.float32)
    return jnp.sum(weight * (1.0 - dice)) / jnp.maximum(jnp.sum(weight), 1.0)


def segmentation_loss(
    logits: jnp.ndarray, label: jnp.ndarray, use_dice: bool = True,
    dice_absent_classes: str = "include",
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Cross entropy plus (optionally) foreground soft Dice, summed with weight 1 each (paper 3.3).

    Args:
        logits: (batch, *spatial, C); for noise prediction pass `mask_to_logits(x0_hat)`.
        label: (batch, *spatial) int.
        use_dice: add the Dice term (Table 3b switches it off). The Dice value is reported in the
            parts either way, so runs with and without it log the same metrics.
        dice_absent_classes: `soft_dice_loss`'s `absent_classes` ("include" | "exclude").

    Returns:
        (loss (), {"loss_ce": (), "loss_dice": ()}).
    """
    loss_ce = cross_entropy(logits, label)
    loss_dice = soft_dice_loss(logits, label, absent_classes=dice_absent_classes)
    loss = loss_ce + loss_dice if use_dice else loss_ce
    return loss, {"loss_ce": loss_ce, "loss_dice": loss_dice}
