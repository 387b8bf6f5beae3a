"""`loss.dice_absent_classes`: the soft Dice with classes absent from an example's label left
out of the mean (the released code) or kept in it, against hand computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.losses import DICE_SMOOTHING, segmentation_loss, soft_dice_loss

S = DICE_SMOOTHING
L3 = float(np.log(3.0))
# Two examples of 4 voxels (1x4), 3 classes. Logits (0, 0, log 3) give p = (1/5, 1/5, 3/5);
# (log 3, 0, 0) give (3/5, 1/5, 1/5).
A = [0.0, 0.0, L3]
B = [L3, 0.0, 0.0]
LOGITS = jnp.array([[[A, A, B, B]], [[A, B, B, B]]])
# Example 0 holds classes 0, 1 and 2; example 1 holds classes 0 and 2, class 1 is absent.
LABEL = jnp.array([[[2, 1, 0, 0]], [[2, 0, 0, 0]]])


def _dice(p, y):
    p, y = np.asarray(p), np.asarray(y)
    return (2 * np.sum(p * y) + S) / (np.sum(p) + np.sum(y) + S)


def _hand_losses():
    """(example, class) losses 1 - Dice for the foreground classes 1 and 2."""
    # Example 0: class 1: p = (1/5, 1/5, 1/5, 1/5), y = (0, 1, 0, 0);
    #            class 2: p = (3/5, 3/5, 1/5, 1/5), y = (1, 0, 0, 0).
    # Example 1: class 1: p = (1/5, 1/5, 1/5, 1/5), y = 0 (absent);
    #            class 2: p = (3/5, 1/5, 1/5, 1/5), y = (1, 0, 0, 0).
    l01 = 1 - _dice([0.2] * 4, [0, 1, 0, 0])
    l02 = 1 - _dice([0.6, 0.6, 0.2, 0.2], [1, 0, 0, 0])
    l11 = 1 - _dice([0.2] * 4, [0, 0, 0, 0])
    l12 = 1 - _dice([0.6, 0.2, 0.2, 0.2], [1, 0, 0, 0])
    return l01, l02, l11, l12


def test_exclude_leaves_the_absent_pair_out_of_the_mean():
    l01, l02, l11, l12 = _hand_losses()
    assert l11 > 0.99  # absent class with a non-empty prediction: the near-constant loss
    np.testing.assert_allclose(soft_dice_loss(LOGITS, LABEL, absent_classes="include"),
                               (l01 + l02 + l11 + l12) / 4, rtol=1e-6)
    # Released: nanmean over the present (example, class) pairs, one flat mean of 3 values.
    np.testing.assert_allclose(soft_dice_loss(LOGITS, LABEL, absent_classes="exclude"),
                               (l01 + l02 + l12) / 3, rtol=1e-6)


def test_exclude_with_background_and_no_foreground():
    l01, l02, l11, l12 = _hand_losses()
    # Background: example 0 p = (1/5, 1/5, 3/5, 3/5), y = (0, 0, 1, 1); example 1
    # p = (1/5, 3/5, 3/5, 3/5), y = (0, 1, 1, 1).
    l00 = 1 - _dice([0.2, 0.2, 0.6, 0.6], [0, 0, 1, 1])
    l10 = 1 - _dice([0.2, 0.6, 0.6, 0.6], [0, 1, 1, 1])
    np.testing.assert_allclose(
        soft_dice_loss(LOGITS, LABEL, include_background=True, absent_classes="exclude"),
        (l00 + l01 + l02 + l10 + l12) / 5, rtol=1e-6)
    # No foreground in any example: nothing to average, 0 (not NaN), and a finite gradient.
    empty = jnp.zeros_like(LABEL)
    assert float(soft_dice_loss(LOGITS, empty, absent_classes="exclude")) == 0.0
    grad = jax.grad(lambda x: soft_dice_loss(x, empty, absent_classes="exclude"))(LOGITS)
    assert bool(jnp.all(jnp.isfinite(grad)))


def test_exclude_gives_the_absent_pair_no_gradient():
    """Only example 1's class-1 logit would feed the absent pair; with "exclude" the gradient of
    the Dice part equals the gradient of the hand mean over the 3 present pairs."""
    def present_mean(x):
        probs = jax.nn.softmax(x, axis=-1)
        onehot = jax.nn.one_hot(LABEL, 3)
        inter = jnp.sum(probs * onehot, axis=(1, 2))
        den = jnp.sum(probs, axis=(1, 2)) + jnp.sum(onehot, axis=(1, 2))
        loss = 1 - (2 * inter + S) / (den + S)
        return (loss[0, 1] + loss[0, 2] + loss[1, 2]) / 3

    got = jax.grad(lambda x: soft_dice_loss(x, LABEL, absent_classes="exclude"))(LOGITS)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.grad(present_mean)(LOGITS)),
                               rtol=1e-5, atol=1e-7)


def test_segmentation_loss_passes_the_option_and_names_bad_values():
    l01, l02, l11, l12 = _hand_losses()
    _, parts = segmentation_loss(LOGITS, LABEL, dice_absent_classes="exclude")
    np.testing.assert_allclose(parts["loss_dice"], (l01 + l02 + l12) / 3, rtol=1e-6)
    with pytest.raises(ValueError, match="'drop'"):
        soft_dice_loss(LOGITS, LABEL, absent_classes="drop")
