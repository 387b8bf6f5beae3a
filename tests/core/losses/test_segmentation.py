"""Cross entropy and foreground soft Dice vs values computed by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.losses import (
    DICE_SMOOTHING,
    cross_entropy,
    noise_l2,
    segmentation_loss,
    soft_dice_loss,
)

# One sample, 2x2 voxels, 2 classes. Logits (0, log 3) give p1 = 3/4; (0, 0) give p1 = 1/2.
LOGITS = jnp.array([[[[0.0, np.log(3.0)], [0.0, 0.0]], [[0.0, np.log(3.0)], [0.0, 0.0]]]])
LABEL = jnp.array([[[1, 0], [1, 1]]])


def test_cross_entropy_by_hand():
    # Voxels: p(label) = 3/4, 1/2, 3/4, 1/2.
    expected = -(np.log(0.75) + np.log(0.5) + np.log(0.75) + np.log(0.5)) / 4
    np.testing.assert_allclose(cross_entropy(LOGITS, LABEL), expected, rtol=1e-6)


def test_soft_dice_by_hand():
    # Foreground class 1: p = (3/4, 1/2, 3/4, 1/2), y = (1, 0, 1, 1).
    intersection = 0.75 + 0.75 + 0.5
    dice = (2 * intersection + DICE_SMOOTHING) / (2.5 + 3 + DICE_SMOOTHING)
    np.testing.assert_allclose(soft_dice_loss(LOGITS, LABEL), 1 - dice, rtol=1e-6)
    # Background (class 0): p = (1/4, 1/2, 1/4, 1/2), y = (0, 1, 0, 0).
    dice_bg = (2 * 0.5 + DICE_SMOOTHING) / (1.5 + 1 + DICE_SMOOTHING)
    np.testing.assert_allclose(
        soft_dice_loss(LOGITS, LABEL, include_background=True),
        ((1 - dice) + (1 - dice_bg)) / 2,
        rtol=1e-6,
    )


def test_perfect_logits_give_zero_dice_loss_and_small_ce():
    label = jnp.array([[[0, 1, 2], [2, 2, 1]], [[1, 1, 0], [0, 0, 2]]])
    logits = 50.0 * (2.0 * jnp.eye(3)[label] - 1.0)
    assert float(soft_dice_loss(logits, label)) == pytest.approx(0.0, abs=1e-6)
    assert float(cross_entropy(logits, label)) < 1e-6


def test_dice_ignores_background_only_changes():
    """Appending voxels that are background in label and (confidently) in prediction changes
    only the background's Dice terms: the foreground loss must not move, the full one must."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.standard_normal((2, 3, 4, 3)), dtype=jnp.float32)
    label = jnp.asarray(rng.integers(0, 3, (2, 3, 4)))
    background_logits = jnp.broadcast_to(jnp.array([100.0, 0.0, 0.0]), (2, 3, 4, 3))
    more_logits = jnp.concatenate([logits, background_logits], axis=2)
    more_label = jnp.concatenate([label, jnp.zeros_like(label)], axis=2)
    np.testing.assert_allclose(
        soft_dice_loss(more_logits, more_label), soft_dice_loss(logits, label), rtol=1e-6
    )
    assert not np.isclose(
        float(soft_dice_loss(more_logits, more_label, include_background=True)),
        float(soft_dice_loss(logits, label, include_background=True)),
        rtol=1e-3,
    )


def test_segmentation_loss_sums_ce_and_dice_and_can_drop_dice():
    loss, parts = segmentation_loss(LOGITS, LABEL)
    np.testing.assert_allclose(loss, parts["loss_ce"] + parts["loss_dice"], rtol=1e-6)
    loss_no_dice, parts_no_dice = segmentation_loss(LOGITS, LABEL, use_dice=False)
    np.testing.assert_allclose(loss_no_dice, parts["loss_ce"], rtol=1e-6)
    np.testing.assert_allclose(parts_no_dice["loss_dice"], parts["loss_dice"], rtol=1e-6)


def test_noise_l2_by_hand_and_shape_check():
    eps_hat = jnp.array([[1.0, 2.0], [0.0, -1.0]])
    eps = jnp.array([[0.0, 0.0], [0.0, 1.0]])
    assert float(noise_l2(eps_hat, eps)) == pytest.approx((1 + 4 + 0 + 4) / 4)
    with pytest.raises(ValueError, match="shapes differ"):
        noise_l2(eps_hat, eps[:1])


def test_cross_entropy_gradient_is_softmax_minus_onehot_over_voxels():
    # d/dlogits mean(-log softmax[label]) = (softmax - onehot) / number of voxels.
    rng = np.random.default_rng(3)
    logits = jnp.asarray(rng.normal(size=(2, 3, 4, 5)), jnp.float32)
    label = jnp.asarray(rng.integers(0, 5, size=(2, 3, 4)))
    expected = (jax.nn.softmax(logits, -1) - jax.nn.one_hot(label, 5)) / (2 * 3 * 4)
    np.testing.assert_allclose(jax.grad(cross_entropy)(logits, label), expected, atol=1e-7)
