"""UNet contract: shapes (2D/3D, diffusion or not), errors, conv-form/remat/bfloat16 equivalence,
time and mask wiring, and the parameter count at the paper's channels.

Parameters come from NumPy (``_numpy_params``) rather than ``model.init``: on XLA:CPU every
``jax.random`` call in a jitted init costs ~1-2 s of compile (threefry), which would dominate
the test budget; shapes still come from ``model.init`` via ``jax.eval_shape``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.models import UNet

TINY = (4, 8, 8, 8)  # four levels, tiny channels: the paper's depth at test cost
C = 3  # classes incl. background


def _inputs(spatial, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.normal(size=(batch, *spatial, 1)), jnp.float32)
    x_t = jnp.asarray(rng.uniform(-1.0, 1.0, size=(batch, *spatial, C)), jnp.float32)
    t = jnp.linspace(0.2, 0.8, batch)
    return image, x_t, t


def _numpy_params(model, *inputs, seed=1):
    """Params with ``model.init``'s tree and shapes; kernels ~ N(0, 1 / fan_in), vectors small."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *inputs)
    rng = np.random.default_rng(seed)

    def fill(a):
        if len(a.shape) > 1:
            std = 1.0 / np.sqrt(np.prod(a.shape[:-1]))
        else:
            std = 0.1
        return jnp.asarray(rng.normal(scale=std, size=a.shape), jnp.float32)

    return jax.tree.map(fill, shapes)


def _shapes(params):
    return jax.tree.map(lambda a: (a.shape, a.dtype), params)


@pytest.mark.parametrize("diffusion,remat", [(True, False), (False, True)])
def test_3d_output_shape_and_dtype(diffusion, remat):
    model = UNet(num_classes=4, channels=TINY, num_res_blocks=1, diffusion=diffusion, remat=remat)
    image = jnp.ones((2, 32, 32, 16, 1))
    args = (image, jnp.zeros((2, 32, 32, 16, 4)), jnp.array([0.1, 0.9])) if diffusion else (image,)
    out_shape = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), *args)[0])
    assert out_shape.shape == (2, 32, 32, 16, 4)
    assert out_shape.dtype == jnp.float32


@pytest.mark.parametrize("diffusion", [True, False])
def test_2d_runs_and_has_2d_kernels(diffusion):
    model = UNet(num_classes=C, channels=(4, 8), num_res_blocks=1, diffusion=diffusion)
    image, x_t, t = _inputs((4, 6))
    args = (image, x_t, t) if diffusion else (image,)
    params = _numpy_params(model, *args)
    out = jax.jit(model.apply)(params, *args)
    assert out.shape == (2, 4, 6, C) and out.dtype == jnp.float32
    assert np.all(np.isfinite(out))
    stem = params["params"]["stem"]["kernel"]
    # Diffusion: image (1) + noisy mask (C) on channels; baseline: image only, no time embedding.
    assert stem.shape == (3, 3, 1 + C if diffusion else 1, 4)
    assert ("time_embedding" in params["params"]) == diffusion


def test_non_divisible_spatial_size_names_the_shape():
    model = UNet(num_classes=C, channels=TINY, diffusion=False)
    with pytest.raises(ValueError, match=r"\(1, 32, 32, 12, 1\).*divisible: \[12\]"):
        model.init(jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 12, 1)))


def test_wrong_inputs_raise_clear_errors():
    image, x_t, t = _inputs((8, 8, 4))
    model = UNet(num_classes=C, channels=(4, 8), num_res_blocks=1)
    with pytest.raises(ValueError, match="needs x_t and t"):
        model.init(jax.random.PRNGKey(0), image)
    with pytest.raises(ValueError, match="x_t must have shape"):
        model.init(jax.random.PRNGKey(0), image, x_t[..., :2], t)
    with pytest.raises(ValueError, match="takes only the image"):
        UNet(num_classes=C, channels=(4, 8), diffusion=False).init(
            jax.random.PRNGKey(0), image, x_t, t
        )
    with pytest.raises(ValueError, match="norm must be one of"):
        UNet(num_classes=C, channels=(4, 8), norm="batch").init(
            jax.random.PRNGKey(0), image, x_t, t
        )


@pytest.fixture(scope="module")
def small_3d():
    """A 2-level 3D model with params shared by the equivalence tests (tiny: compile time)."""
    image, x_t, t = _inputs((4, 4, 4))
    kw = dict(num_classes=C, channels=(4, 8), num_res_blocks=1, num_groups=2)
    params = _numpy_params(UNet(**kw, conv_impl="lax3d"), image, x_t, t)
    return kw, params, (image, x_t, t)


def _loss_and_grad(model, params, inputs):
    w = np.random.default_rng(7).normal(size=inputs[0].shape[:-1] + (C,)).astype(np.float32)
    loss = lambda p: jnp.sum(model.apply(p, *inputs) * w)
    return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.usefixtures("highest_precision")
@pytest.mark.parametrize(
    "impl, rtol, atol",
    # slices computes every conv differently from lax3d; lax3d_s2d only the down/up convs.
    [("slices", 1e-3, 1e-4), ("lax3d_s2d", 1e-4, 1e-5)],
)
@pytest.mark.slow
def test_conv_forms_share_params_and_agree(small_3d, impl, rtol, atol):
    kw, params, inputs = small_3d
    p_form = jax.eval_shape(UNet(**kw, conv_impl=impl).init, jax.random.PRNGKey(1), *inputs)
    assert _shapes(p_form) == _shapes(params)
    out_l = jax.jit(UNet(**kw, conv_impl="lax3d").apply)(params, *inputs)
    out_f = jax.jit(UNet(**kw, conv_impl=impl).apply)(params, *inputs)
    np.testing.assert_allclose(out_f, out_l, rtol=rtol, atol=atol)
    loss_l, grad_l = _loss_and_grad(UNet(**kw, conv_impl="lax3d"), params, inputs)
    loss_f, grad_f = _loss_and_grad(UNet(**kw, conv_impl=impl), params, inputs)
    np.testing.assert_allclose(loss_f, loss_l, rtol=rtol / 10)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=rtol, atol=atol), grad_f, grad_l
    )


@pytest.mark.slow
@pytest.mark.usefixtures("highest_precision")
def test_remat_same_outputs_and_grads(small_3d):
    kw, params, inputs = small_3d
    loss, grad = _loss_and_grad(UNet(**kw), params, inputs)
    loss_r, grad_r = _loss_and_grad(UNet(**kw, remat=True), params, inputs)
    np.testing.assert_allclose(loss_r, loss, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), grad_r, grad)


def test_bfloat16_compute_keeps_float32_params_and_output(small_3d):
    kw, params, inputs = small_3d
    p_bf16 = jax.eval_shape(UNet(**kw, dtype=jnp.bfloat16).init, jax.random.PRNGKey(1), *inputs)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(p_bf16))
    out32 = jax.jit(UNet(**kw).apply)(params, *inputs)
    out16 = jax.jit(UNet(**kw, dtype=jnp.bfloat16).apply)(params, *inputs)
    assert out16.dtype == jnp.float32
    # bfloat16 has ~3 significant digits: close, but not bit-equal (else dtype was ignored).
    abs_err = jnp.abs(out16 - out32)
    scale = float(jnp.std(out32))
    assert 0 < float(jnp.mean(abs_err)) < 0.03 * scale, (float(jnp.mean(abs_err)), scale)
    assert float(jnp.max(abs_err)) < 0.2 * scale


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
def test_output_depends_on_time_and_noisy_mask(small_3d):
    kw, params, (image, x_t, t) = small_3d
    apply = jax.jit(UNet(**kw).apply)
    out = apply(params, image, x_t, t)
    out_t = apply(params, image, x_t, t + 0.25)
    out_x = apply(params, image, -x_t, t)
    # Each batch element changes (time enters every block; the mask is an input channel).
    assert np.all(np.max(np.abs(out_t - out), axis=(1, 2, 3, 4)) > 1e-3)
    assert np.all(np.max(np.abs(out_x - out), axis=(1, 2, 3, 4)) > 1e-3)
    # Scalar t is broadcast to the batch.
    np.testing.assert_allclose(
        apply(params, image, x_t, 0.5), apply(params, image, x_t, jnp.full((2,), 0.5)), atol=1e-6
    )


@pytest.mark.slow  # several seconds: in make test, not in the edit-test loop
@pytest.mark.usefixtures("highest_precision")
def test_instance_norm_is_group_norm_with_one_channel_per_group():
    image, x_t, t = _inputs((8, 8, 4))
    kw = dict(num_classes=C, channels=(4, 8), num_res_blocks=1)
    inst = UNet(**kw, norm="instance")
    params = _numpy_params(inst, image, x_t, t)
    out = jax.jit(inst.apply)(params, image, x_t, t)
    # 8 groups clip to 4 (level 0) and 8 (level 1) groups: one channel per group everywhere.
    out_g8 = jax.jit(UNet(**kw, norm="group", num_groups=8).apply)(params, image, x_t, t)
    out_g2 = jax.jit(UNet(**kw, norm="group", num_groups=2).apply)(params, image, x_t, t)
    np.testing.assert_allclose(out, out_g8, atol=1e-5)
    assert not np.allclose(out, out_g2, atol=1e-3)


def _count(model, *args):
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))


def _closed_form_count(channels, blocks, classes, diffusion):
    """Independent count from the architecture description in unet.py."""
    conv = lambda k, cin, cout: k**3 * cin * cout + cout
    dense = lambda cin, cout: cin * cout + cout
    temb = 4 * channels[0]

    def block(cin, c):
        n = conv(3, cin, c) + conv(3, c, c) + 2 * (2 * c)
        n += dense(temb, 2 * c) if diffusion else 0
        return n + (dense(cin, c) if cin != c else 0)

    n = conv(3, 1 + (classes if diffusion else 0), channels[0])
    n += dense(channels[0], temb) + dense(temb, temb) if diffusion else 0
    for level, c in enumerate(channels):
        n += blocks * block(c, c)
        if level < len(channels) - 1:
            n += conv(2, c, channels[level + 1]) + conv(2, channels[level + 1], c)  # down + up
            n += block(2 * c, c) + (blocks - 1) * block(c, c)
    return n + dense(channels[0], classes)


def test_parameter_count_at_paper_channels():
    spatial = (32, 32, 16)
    image = jax.ShapeDtypeStruct((1, *spatial, 1), jnp.float32)
    x_t = jax.ShapeDtypeStruct((1, *spatial, 9), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    paper = (32, 64, 128, 256)
    # Prostate MR: 8 organs + background, two residual blocks per level.
    n_diff = _count(UNet(num_classes=9), image, x_t, t)
    n_unet = _count(UNet(num_classes=9, diffusion=False), image)
    assert n_diff == _closed_form_count(paper, 2, 9, True) == 13_436_809
    assert n_unet == _closed_form_count(paper, 2, 9, False) == 13_045_033
