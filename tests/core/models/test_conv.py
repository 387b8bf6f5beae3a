"""The two conv forms (``slices`` / ``lax3d``) agree with each other and with hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.models.conv import (
    _conv3d_slices_out,
    _conv3d_slices_sum,
    _lean_blocks,
    conv3d_slices,
    conv_lax,
    conv_same,
    downsample,
    resolve_conv_impl,
    target_backend,
    upsample,
)
from diffseg3d.core.models.norm import group_count

# Every test here compares two conv forms (or one with NumPy) at float32 tolerances: pin full
# float32, which a GPU would otherwise replace by TF32 (tests/core/conftest.py).
pytestmark = pytest.mark.usefixtures("highest_precision")


def _random(seed, x_shape, k_shape):
    rng = np.random.default_rng(seed)
    # Small kernel values keep sums of 3*3*3*cin products O(1), so atol 1e-5 is meaningful.
    x = rng.normal(size=x_shape).astype(np.float32)
    return jnp.asarray(x), jnp.asarray(0.2 * rng.normal(size=k_shape), jnp.float32)


@pytest.mark.parametrize("cin, cout", [(3, 4), (5, 2)])
@pytest.mark.parametrize("lean", [False, True])
@pytest.mark.parametrize("kernel_size", [3, 1])
def test_slices_conv_matches_lax_3d_conv_values_and_gradients(kernel_size, lean, cin, cout):
    # Forward: the sum of 2D convs (lean: the stacked form); the output form is tested below.
    x, k = _random(0, (2, 5, 6, 4, cin), (kernel_size,) * 3 + (cin, cout))
    np.testing.assert_allclose(conv3d_slices(x, k), conv_lax(x, k), atol=1e-5)
    np.testing.assert_allclose(_conv3d_slices_sum(x, k), conv_lax(x, k), atol=1e-5)

    # A non-trivial cotangent (not all ones) so every output position weighs differently.
    w = np.random.default_rng(1).normal(size=(2, 5, 6, 4, cout)).astype(np.float32)
    loss = lambda f: lambda x, k: jnp.sum(f(x, k) * w)
    slices = lambda x, k: conv3d_slices(x, k, lean)
    gx_s, gk_s = jax.grad(loss(slices), argnums=(0, 1))(x, k)
    gx_l, gk_l = jax.grad(loss(conv_lax), argnums=(0, 1))(x, k)
    np.testing.assert_allclose(gx_s, gx_l, atol=1e-5)
    np.testing.assert_allclose(gk_s, gk_l, atol=1e-4, rtol=1e-5)


def test_lax_conv_equals_direct_sum_at_one_voxel():
    # Independent check of the conv convention (cross-correlation, SAME zero padding).
    x, k = _random(2, (1, 4, 4, 4, 2), (3, 3, 3, 2, 1))
    xp = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (1, 1), (0, 0)))
    kn = np.asarray(k)
    for p in [(0, 0, 0), (1, 2, 3), (3, 3, 3)]:
        patch = xp[0, p[0] : p[0] + 3, p[1] : p[1] + 3, p[2] : p[2] + 3, :]
        expected = np.sum(patch * kn[..., 0])
        np.testing.assert_allclose(conv3d_slices(x, k)[0, p[0], p[1], p[2], 0], expected, atol=1e-5)


@pytest.mark.parametrize("spatial", [(4, 6, 2), (4, 6)])
def test_down_and_up_sampling_forms_agree_with_definition(spatial):
    rank = len(spatial)
    x, kd = _random(3, (2, *spatial, 3), (2,) * rank + (3, 5))
    _, ku = _random(4, (1,), (2,) * rank + (3, 5))
    down_s, down_l = downsample(x, kd, "slices"), downsample(x, kd, "lax3d")
    up_s, up_l = upsample(x, ku, "slices"), upsample(x, ku, "lax3d")
    assert down_s.shape == (2, *[n // 2 for n in spatial], 5)
    assert up_s.shape == (2, *[2 * n for n in spatial], 5)
    np.testing.assert_allclose(down_s, down_l, atol=1e-5)
    np.testing.assert_allclose(up_s, up_l, atol=1e-5)

    # Definitions: down y[p] = sum_o x[2p + o] @ k[o]; up y[2p + o] = x[p] @ k[o].
    xn, kdn, kun = np.asarray(x), np.asarray(kd), np.asarray(ku)
    offset = (1,) * rank
    sl = tuple(slice(o, None, 2) for o in offset)
    np.testing.assert_allclose(up_s[(slice(None), *sl)], xn @ kun[offset], atol=1e-5)
    expected_down = sum(
        xn[(slice(None), *(slice(o, None, 2) for o in off))] @ kdn[off]
        for off in np.ndindex(*(2,) * rank)
    )
    np.testing.assert_allclose(down_s, expected_down, atol=1e-5)


def test_resolve_conv_impl():
    assert resolve_conv_impl("auto", backend="cpu") == "slices"
    assert resolve_conv_impl("auto", backend="gpu") == "lax3d_s2d"
    assert resolve_conv_impl("auto", backend="tpu") == "lax3d_s2d"
    assert resolve_conv_impl("lax3d", backend="cpu") == "lax3d"
    assert resolve_conv_impl("lax3d_s2d", backend="gpu") == "lax3d_s2d"
    with pytest.raises(ValueError, match="'conv2d'"):
        resolve_conv_impl("conv2d")


def test_auto_resolves_for_the_target_backend_inside_its_block_only():
    assert resolve_conv_impl("auto") == "slices"  # the tests run on the CPU backend
    with target_backend("gpu"):
        assert resolve_conv_impl("auto") == "lax3d_s2d"
        assert resolve_conv_impl("auto", backend="cpu") == "slices"  # an explicit one wins
        assert resolve_conv_impl("lax3d") == "lax3d"
    assert resolve_conv_impl("auto") == "slices"


def _conv_primitives(fn, *args) -> set[str]:
    """Names of the conv primitives in the jaxpr of ``fn(*args)``, sub-jaxprs included."""
    names = set()

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if "conv" in eqn.primitive.name:
                names.add(eqn.primitive.name)
            for param in eqn.params.values():
                inner = getattr(param, "jaxpr", param)  # ClosedJaxpr -> Jaxpr
                if hasattr(inner, "eqns"):
                    walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return names


@pytest.mark.parametrize("cin, cout", [(3, 5), (7, 1)])
@pytest.mark.parametrize("spatial", [(4, 6, 2), (4, 6)])
def test_lax3d_s2d_equals_lax3d_values_and_gradients(spatial, cin, cout):
    # The accelerator candidate: lax3d's native k x k x k conv, the reshape + matmul down/up.
    rank = len(spatial)
    rng = np.random.default_rng(10)
    x = jnp.asarray(rng.normal(size=(2, *spatial, cin)), jnp.float32)
    for form, size in ((conv_same, 3), (downsample, 2), (upsample, 2)):
        k = jnp.asarray(0.2 * rng.normal(size=(size,) * rank + (cin, cout)), jnp.float32)
        w = jnp.asarray(rng.normal(size=form(x, k, "lax3d").shape), jnp.float32)
        grads = {
            impl: jax.grad(lambda x, k, i=impl, f=form, w=w: jnp.sum(f(x, k, i) * w),
                           argnums=(0, 1))
            for impl in ("lax3d_s2d", "lax3d")
        }
        y_s, y_l = form(x, k, "lax3d_s2d"), form(x, k, "lax3d")
        (gx_s, gk_s), (gx_l, gk_l) = grads["lax3d_s2d"](x, k), grads["lax3d"](x, k)
        if form is conv_same:  # the very same native conv: bit-identical
            np.testing.assert_array_equal(y_s, y_l)
            np.testing.assert_array_equal(gx_s, gx_l)
            np.testing.assert_array_equal(gk_s, gk_l)
            continue
        np.testing.assert_allclose(y_s, y_l, atol=1e-5)
        np.testing.assert_allclose(gx_s, gx_l, atol=1e-5)
        np.testing.assert_allclose(gk_s, gk_l, atol=1e-4, rtol=1e-5)
        # The point of the form: no conv (strided or lhs-dilated) left, forward or backward.
        assert _conv_primitives(grads["lax3d_s2d"], x, k) == set()
        assert _conv_primitives(grads["lax3d"], x, k) == {"conv_general_dilated"}


def test_group_count_clips_to_a_divisor():
    assert group_count(32, 8) == 8
    assert group_count(12, 8) == 6
    assert group_count(4, 8) == 4
    assert group_count(7, 8) == 7
    assert group_count(10, 4) == 2


def test_slices_conv_saves_only_input_and_kernel_for_backward():
    # The stacked input is 3x the input; the custom VJP must not keep it between passes.
    from jax._src.ad_checkpoint import saved_residuals

    x, k = _random(3, (1, 6, 4, 4, 5), (3, 3, 3, 5, 7))
    saved = saved_residuals(lambda x, k: jnp.sum(conv3d_slices(x, k)), x, k)
    saved_bytes = sum(np.prod(aval.shape) * aval.dtype.itemsize for aval, _ in saved)
    assert saved_bytes <= x.nbytes + k.nbytes


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
def test_bfloat16_slices_conv_gradients_close_to_float32():
    x, k = _random(4, (1, 4, 6, 4, 8), (3, 3, 3, 8, 8))
    w = np.random.default_rng(5).normal(size=(1, 4, 6, 4, 8)).astype(np.float32)
    loss = lambda x, k: jnp.sum(conv3d_slices(x, k).astype(jnp.float32) * w)
    g32 = jax.grad(loss, argnums=(0, 1))(x, k)
    g16 = jax.grad(loss, argnums=(0, 1))(x.astype(jnp.bfloat16), k.astype(jnp.bfloat16))
    assert g16[0].dtype == jnp.bfloat16 and g16[1].dtype == jnp.bfloat16
    for a, b in zip(g16, g32, strict=True):
        rel = float(jnp.linalg.norm(a.astype(jnp.float32) - b) / jnp.linalg.norm(b))
        assert rel < 2e-2


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
def test_lean_conv_in_x_blocks_equals_whole_volume_conv(monkeypatch):
    # A tiny block budget forces 3 uneven X-blocks (7 slices): values and gradients unchanged.
    from diffseg3d.core.models import conv as conv_module

    x, k = _random(6, (2, 7, 4, 3, 5), (3, 3, 3, 5, 4))
    stacked_bytes = 2 * 7 * 4 * 3 * 3 * 5 * 4
    monkeypatch.setattr(conv_module, "LEAN_BLOCK_BYTES", stacked_bytes // 3)
    assert conv_module._lean_blocks(x.shape, 3) == 3
    w = np.random.default_rng(7).normal(size=(2, 7, 4, 3, 4)).astype(np.float32)
    np.testing.assert_allclose(conv3d_slices(x, k, True), conv_lax(x, k), atol=1e-5)
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * w), argnums=(0, 1))(x, k)
             for f in (lambda x, k: conv3d_slices(x, k, True), conv_lax)]
    np.testing.assert_allclose(grads[0][0], grads[1][0], atol=1e-5)
    np.testing.assert_allclose(grads[0][1], grads[1][1], atol=1e-4, rtol=1e-5)


def test_lean_blocks_budget():
    # Paper level 0 (256 slices of 256 x 48, 32 channels): 1.125 GiB stacked in float32.
    assert _lean_blocks((1, 256, 256, 48, 32), 3) == 5
    assert _lean_blocks((1, 8, 4, 4, 2), 3) == 1
    assert _lean_blocks((1, 2, 4096, 4096, 64), 3) == 2  # never more blocks than slices


def test_output_form_and_the_64_channel_forward_match_lax_conv():
    # From 64 input channels conv3d_slices takes the output form; both checked at tiny spatial size.
    x, k = _random(8, (1, 3, 4, 2, 64), (3, 3, 3, 64, 5))
    k = k / 4.0  # keep sums over 27 * 64 products O(1) for atol 1e-5
    np.testing.assert_allclose(_conv3d_slices_out(x, k), conv_lax(x, k), atol=1e-5)
    np.testing.assert_allclose(conv3d_slices(x, k), conv_lax(x, k), atol=1e-5)
    w = np.random.default_rng(9).normal(size=(1, 3, 4, 2, 5)).astype(np.float32)
    grads = [jax.grad(lambda x, k, f=f: jnp.sum(f(x, k) * w), argnums=(0, 1))(x, k)
             for f in (conv3d_slices, conv_lax)]
    np.testing.assert_allclose(grads[0][0], grads[1][0], atol=1e-5)
    np.testing.assert_allclose(grads[0][1], grads[1][1], atol=1e-4, rtol=1e-5)
