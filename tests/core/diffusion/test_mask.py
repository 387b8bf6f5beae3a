"""Masks in [-1, 1]: label <-> mask <-> logits."""

import jax.numpy as jnp
import numpy as np
from diffseg3d.core.diffusion import label_to_mask, logits_to_mask, mask_to_label, mask_to_logits


def test_label_to_mask_is_two_onehot_minus_one_and_argmax_inverts_it():
    label = jnp.array([[0, 2], [1, 1]])
    mask = label_to_mask(label, 3)
    assert mask.shape == (2, 2, 3) and mask.dtype == jnp.float32
    np.testing.assert_array_equal(mask[0, 1], [-1.0, -1.0, 1.0])
    np.testing.assert_array_equal(mask_to_label(mask), label)


def test_logits_mask_round_trip_up_to_softmax():
    logits = jnp.array([[[2.0, -1.0, 0.5]]])
    mask = logits_to_mask(logits)
    probs = np.exp([2.0, -1.0, 0.5]) / np.exp([2.0, -1.0, 0.5]).sum()
    np.testing.assert_allclose(mask[0, 0], 2 * probs - 1, rtol=1e-6)
    np.testing.assert_allclose(logits_to_mask(mask_to_logits(mask)), mask, atol=1e-6)


def test_mask_to_logits_clips_out_of_range_masks():
    logits = mask_to_logits(jnp.array([[-1.5, 1.5]]))
    np.testing.assert_allclose(logits, [[np.log(1e-6), 0.0]], rtol=1e-6)
