"""The matmul-per-tap kernel gradient equals a brute-force NumPy sum."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.models.kernel_grad import conv_kernel_grad
from jax import lax

# Compared with float64 NumPy and with autodiff at 1e-5: full float32 also on a GPU (no TF32).
pytestmark = pytest.mark.usefixtures("highest_precision")


def _numpy_kernel_grad(s, g, ky, kz):
    """dk[a, b, c, o] = sum_{n,y,z} s_pad[n, y + a, z + b, c] g[n, y, z, o] ("SAME" zero pad)."""
    py, pz = ky // 2, kz // 2
    sp = np.pad(s, ((0, 0), (py, py), (pz, pz), (0, 0))).astype(np.float64)
    n, ny, nz, _ = g.shape
    out = np.zeros((ky, kz, s.shape[-1], g.shape[-1]))
    for a in range(ky):
        for b in range(kz):
            window = sp[:, a : a + ny, b : b + nz]
            out[a, b] = np.einsum("nyzc,nyzo->co", window, g.astype(np.float64))
    return out


@pytest.mark.parametrize("ky, kz", [(3, 3), (3, 5), (1, 3)])
def test_kernel_grad_equals_brute_force_sum(ky, kz):
    rng = np.random.default_rng(0)
    s = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)
    g = rng.normal(size=(2, 5, 7, 4)).astype(np.float32)
    got = conv_kernel_grad(jnp.asarray(s), jnp.asarray(g), (ky, kz, 3, 4))
    np.testing.assert_allclose(got, _numpy_kernel_grad(s, g, ky, kz), rtol=1e-5, atol=1e-5)


def test_bfloat16_kernel_grad_accumulates_in_float32():
    # 4096 pixels of products that are all +1: a bfloat16 accumulator would stall at 256.
    s = jnp.ones((1, 64, 64, 1), jnp.bfloat16)
    g = jnp.ones((1, 64, 64, 1), jnp.bfloat16)
    dk = conv_kernel_grad(s, g, (1, 1, 1, 1))
    assert dk.dtype == jnp.bfloat16
    assert float(dk[0, 0, 0, 0]) == 4096.0


def test_3d_kernel_grad_equals_autodiff_of_lax_conv():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 4, 5, 3, 3)), jnp.float32)
    g = jnp.asarray(rng.normal(size=(2, 4, 5, 3, 2)), jnp.float32)
    conv = lambda k: lax.conv_general_dilated(
        x, k, (1, 1, 1), "SAME", dimension_numbers=("NHWDC", "HWDIO", "NHWDC"))
    expected = jax.vjp(conv, jnp.zeros((3, 3, 3, 3, 2)))[1](g)[0]
    got = conv_kernel_grad(x, g, (3, 3, 3, 3, 2))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_shape", [(2, 3, 1, 1), (3, 3, 3, 1, 1)])
def test_even_or_wrong_rank_kernel_is_refused_with_its_shape(kernel_shape):
    s = jnp.ones((1, 4, 4, 1))
    with pytest.raises(ValueError, match=re.escape(str(kernel_shape))):
        conv_kernel_grad(s, s, kernel_shape)
