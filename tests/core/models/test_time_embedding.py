"""Sinusoidal time embedding against hand-computed sin/cos values."""

import math

import jax.numpy as jnp
import numpy as np
from diffseg3d.core.models import sinusoidal_embedding


def test_sinusoidal_embedding_hand_computed():
    t = 3.0
    emb = np.asarray(sinusoidal_embedding(jnp.array([t, 0.0]), dim=8))
    # half = 4, freq_i = 10000 ** (-i / 4) = 1, 0.1, 0.01, 0.001
    freqs = [1.0, 0.1, 0.01, 0.001]
    expected = [math.cos(t * f) for f in freqs] + [math.sin(t * f) for f in freqs]
    assert emb.shape == (2, 8)
    np.testing.assert_allclose(emb[0], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(emb[1], [1, 1, 1, 1, 0, 0, 0, 0])


def test_sinusoidal_embedding_odd_dim_pads_one_zero():
    emb = np.asarray(sinusoidal_embedding(jnp.array([2.0]), dim=5))
    np.testing.assert_allclose(
        emb[0], [math.cos(2.0), math.cos(0.02), math.sin(2.0), math.sin(0.02), 0.0], rtol=1e-6
    )
