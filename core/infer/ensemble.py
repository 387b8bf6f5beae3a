"""Ensembles of N independent diffusion samples: label, entropy and disagreement maps.

Each sample's final x0_hat (in [-1, 1], paper 3.1) is mapped to class probabilities
p = (x0_hat + 1) / 2, clipped to [0, 1] and renormalised over classes per voxel. For a model that
predicts the mask (x0_hat = 2 softmax(logits) - 1) the renormalisation changes nothing but
rounding; for a noise-predicting model the clipped x0_hat need not sum to 1 over classes, and
renormalising gives every sample the same weight in the mean at every voxel (a voxel where all
channels are clipped to -1 gets the uniform distribution). The ensemble is the mean of the N
probability maps; its label is the argmax over classes (ties go to the lower class index, as
`jnp.argmax`). A single sample's ensemble label equals the sampler's own label (argmax of x0_hat).

All functions are pure jnp, jit-able, and take x0_hats of shape (samples, batch, *spatial,
classes).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _check_samples(x0_hats: jax.Array) -> None:
    if x0_hats.ndim < 3:
        raise ValueError(
            f"x0_hats must be (samples, batch, *spatial, classes), got shape {x0_hats.shape}"
        )


def sample_probabilities(x0_hats: jax.Array) -> jax.Array:
    """Per-sample class probabilities (samples, batch, *spatial, classes) float32, summing to 1
    over classes: clip((x0_hat + 1) / 2, 0, 1) renormalised (uniform where all are 0)."""
    _check_samples(x0_hats)
    probs = jnp.clip((x0_hats.astype(jnp.float32) + 1.0) / 2.0, 0.0, 1.0)
    total = probs.sum(axis=-1, keepdims=True)
    uniform = jnp.full_like(probs, 1.0 / probs.shape[-1])
    return jnp.where(total > 0, probs / jnp.where(total > 0, total, 1.0), uniform)


def ensemble_probabilities(x0_hats: jax.Array) -> jax.Array:
    """Mean over samples of `sample_probabilities`: (batch, *spatial, classes) float32."""
    return sample_probabilities(x0_hats).mean(axis=0)


def ensemble_label(x0_hats: jax.Array) -> jax.Array:
    """Argmax over classes of the ensemble probabilities: (batch, *spatial) int32."""
    return jnp.argmax(ensemble_probabilities(x0_hats), axis=-1).astype(jnp.int32)


def _entropy(probs: jax.Array) -> jax.Array:
    # xlogy gives 0 log 0 = 0, so voxels where all samples agree on a one-hot have entropy 0.
    return -jax.scipy.special.xlogy(probs, probs).sum(axis=-1)


def entropy_map(x0_hats: jax.Array) -> jax.Array:
    """Entropy (natural log, nats) of the ensemble probabilities per voxel: (batch, *spatial)
    float32 in [0, log(classes)]; 0 where all samples give the same one-hot, log 2 where two
    one-hot samples split evenly between two classes, log C for a uniform mean."""
    return _entropy(ensemble_probabilities(x0_hats))


def _disagreement(x0_hats: jax.Array, label: jax.Array) -> jax.Array:
    sample_labels = jnp.argmax(x0_hats, axis=-1)
    return (sample_labels != label[None]).astype(jnp.float32).mean(axis=0)


def disagreement_map(x0_hats: jax.Array) -> jax.Array:
    """Fraction of samples whose own label (argmax of x0_hat) differs from the ensemble label:
    (batch, *spatial) float32 in [0, 1] (1 is possible with soft samples: (0.5, 0.45, 0.05) and
    (0.05, 0.45, 0.5) average to class 1, which neither sample's argmax picks)."""
    return _disagreement(x0_hats, ensemble_label(x0_hats))


def ensemble_maps(x0_hats: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(ensemble_label, entropy_map, disagreement_map) of x0_hats from one probability mean."""
    probs = ensemble_probabilities(x0_hats)
    label = jnp.argmax(probs, axis=-1).astype(jnp.int32)
    return label, _entropy(probs), _disagreement(x0_hats, label)
