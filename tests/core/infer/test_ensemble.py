"""Ensembles of diffusion samples: identical samples, entropy extremes, disagreement by hand."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion import logits_to_mask, mask_to_label
from diffseg3d.core.infer.ensemble import (
    disagreement_map,
    ensemble_label,
    ensemble_maps,
    ensemble_probabilities,
    entropy_map,
    sample_probabilities,
)


def _one_hot_x0(labels, classes):
    """x0 masks in {-1, 1}: (samples, batch, *spatial) int -> (..., classes)."""
    return 2.0 * jax.nn.one_hot(jnp.asarray(labels), classes) - 1.0


def _soft_x0(seed, shape):
    logits = jax.random.normal(jax.random.PRNGKey(seed), shape) * 3.0
    return logits_to_mask(logits)


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
def test_n_identical_samples_equal_one_sample():
    x0 = _soft_x0(0, (2, 4, 3, 2, 4))  # (batch, *spatial, classes)
    one = x0[None]
    many = jnp.stack([x0] * 5)
    np.testing.assert_allclose(ensemble_probabilities(many), ensemble_probabilities(one),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(ensemble_label(many), ensemble_label(one))
    # One sample's ensemble label is the sampler's label (argmax of x0_hat).
    np.testing.assert_array_equal(ensemble_label(one), mask_to_label(x0))
    np.testing.assert_allclose(entropy_map(many), entropy_map(one), rtol=1e-5, atol=1e-6)
    assert float(jnp.max(disagreement_map(many))) == 0.0


def test_mask_model_probabilities_are_the_softmax():
    logits = jax.random.normal(jax.random.PRNGKey(1), (1, 3, 3, 2, 5))
    probs = sample_probabilities(logits_to_mask(logits)[None])[0]
    np.testing.assert_allclose(probs, jax.nn.softmax(logits, axis=-1), rtol=1e-5, atol=1e-6)


def test_clipped_noise_model_samples_are_renormalised():
    """eps models clip x0_hat per channel: (0.2, 0.2, -1) -> (0.6, 0.6, 0) -> (0.5, 0.5, 0);
    all channels at -1 -> uniform."""
    x0 = jnp.array([[[[0.2, 0.2, -1.0], [-1.0, -1.0, -1.0]]]])  # (1, 1, 2, 3)
    probs = sample_probabilities(x0)
    np.testing.assert_allclose(probs[0, 0, 0], [0.5, 0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(probs[0, 0, 1], [1 / 3] * 3, atol=1e-7)


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
def test_entropy_zero_where_all_agree_and_maximal_where_split_evenly():
    # Voxel 0: all 4 samples say class 1. Voxel 1: two say 0, two say 1.
    labels = np.array([[[1, 0]], [[1, 0]], [[1, 1]], [[1, 1]]])  # (samples=4, batch=1, 2)
    entropy = entropy_map(_one_hot_x0(labels, 3))
    assert float(entropy[0, 0]) == 0.0
    assert float(entropy[0, 1]) == pytest.approx(math.log(2), rel=1e-6)
    # Three one-hot samples over three classes: the uniform mean, entropy log 3 (the maximum).
    uniform = entropy_map(_one_hot_x0(np.array([[[0]], [[1]], [[2]]]), 3))
    assert float(uniform[0, 0]) == pytest.approx(math.log(3), rel=1e-6)
    soft = entropy_map(_soft_x0(2, (3, 2, 4, 4, 3)))
    assert float(soft.min()) >= 0.0 and float(soft.max()) <= math.log(3) + 1e-6


def test_disagreement_hand_values():
    # 4 samples, 1 batch, 4 voxels, 3 classes:
    #   voxel 0: 1 1 1 1 -> ensemble 1, disagreement 0
    #   voxel 1: 2 2 2 0 -> ensemble 2, 1 of 4 differ
    #   voxel 2: 0 1 0 1 -> tie 0.5/0.5, argmax picks class 0, 2 of 4 differ
    #   voxel 3: 0 1 2 2 -> ensemble 2, 2 of 4 differ
    labels = np.array([[[1, 2, 0, 0]], [[1, 2, 1, 1]], [[1, 2, 0, 2]], [[1, 0, 1, 2]]])
    x0 = _one_hot_x0(labels, 3)
    np.testing.assert_array_equal(ensemble_label(x0), [[1, 2, 0, 2]])
    np.testing.assert_allclose(disagreement_map(x0), [[0.0, 0.25, 0.5, 0.5]])


def test_soft_samples_can_all_disagree_with_the_ensemble():
    x0 = 2.0 * jnp.array([[[[0.5, 0.45, 0.05]]], [[[0.05, 0.45, 0.5]]]]) - 1.0  # (2, 1, 1, 3)
    assert int(ensemble_label(x0)[0, 0]) == 1
    assert float(disagreement_map(x0)[0, 0]) == 1.0


def test_ensemble_maps_match_the_single_functions_under_jit():
    x0 = _soft_x0(3, (4, 2, 3, 3, 2, 5))
    label, entropy, disagreement = jax.jit(ensemble_maps)(x0)
    np.testing.assert_array_equal(label, ensemble_label(x0))
    np.testing.assert_allclose(entropy, entropy_map(x0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(disagreement, disagreement_map(x0))
    assert label.shape == entropy.shape == disagreement.shape == (2, 3, 3, 2)


def test_bad_shape_raises():
    with pytest.raises(ValueError, match="samples, batch"):
        ensemble_label(jnp.zeros((4, 3)))
