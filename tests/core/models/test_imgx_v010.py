"""The released v0.1.0 network (``imgx_v010``): parameter count and level shapes derived by hand
from the released code, the time-cancelling InstanceNorm, and the project options (every
conv_impl, remat, bfloat16, gradient accumulation) at 32x32x16 with few channels."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from diffseg3d.core.diffusion.schedule import TIME_INPUTS
from diffseg3d.core.models.architecture import (
    ARCHITECTURES,
    TIME_SCALES,
    build_network,
    time_scale_for,
)
from diffseg3d.core.models.conv import CONV_IMPLS
from diffseg3d.core.models.imgx_v010 import ImgXV010UNet
from diffseg3d.core.models.time_embedding import sinusoidal_embedding
from diffseg3d.core.models.unet import UNet
from diffseg3d.core.train.steps import accumulate_gradients, make_loss_fn

PAPER = (32, 64, 128, 256)
TINY = (4, 4, 8, 8)
SPATIAL = (32, 32, 16)
C = 3


def _count(model, *args) -> int:
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
    return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))


def _paper_inputs(num_classes, diffusion=True):
    image = jax.ShapeDtypeStruct((1, *SPATIAL, 1), jnp.float32)
    if not diffusion:
        return (image,)
    return (image, jax.ShapeDtypeStruct((1, *SPATIAL, num_classes), jnp.float32),
            jax.ShapeDtypeStruct((1,), jnp.float32))


def test_parameter_count_equals_the_hand_count_of_the_released_code():
    """Hand count from ImgX-DiffSeg v0.1.0, channels (32, 64, 128, 256), 3x3x3 kernels,
    time width 4 * 32 = 128 (``unet_3d_time.py:202``), prostate MR 9 classes (8 + background,
    ``male_pelvic_mr_dataset_builder.py:38-48``), input 1 + 9 = 10 channels (``model.py:45``):

    - stem ``Conv3dNormAct``: conv without bias 27 * 10 * 32 = 8640, InstanceNorm 2 * 32 = 64.
    - ``TimeConv3dResBlock(C)``: two bias-free 3x3x3 convs 2 * 27 C^2, two InstanceNorms 4 C,
      ``Linear(128 -> C)`` 128 C + C: 54 C^2 + 133 C, i.e. C=32: 59,552; 64: 229,696;
      128: 901,760; 256: 3,572,992.
    - ``Conv3dPool(cin -> cout)``: 2x2x2 bias-free conv 8 cin cout + InstanceNorm 2 cout:
      32->32: 8,256; 32->64: 16,512; 64->128: 65,792; 128->256: 262,656.
    - ``Conv3DTranspose(cin -> c)`` with bias: 8 cin c + c: 256->128: 262,272; 128->64:
      65,600; 64->32: 16,416; 32->32: 8,224.
    - head 1x1x1 conv with bias: 32 * 9 + 9 = 297.

    Encoder: 8,704 + 59,552 (stem block) + 8,256 + 59,552 + 16,512 + 229,696 + 65,792 +
    901,760 + 262,656 + 3,572,992 = 5,185,472. Decoder (widths 128, 64, 32, 32): 262,272 +
    901,760 + 65,600 + 229,696 + 16,416 + 59,552 + 8,224 + 59,552 + 297 = 1,603,369.
    Total 6,788,841. AMOS (16 classes, 17 input channels): stem conv + 27 * 7 * 32 = 6,048,
    head + 7 * 32 + 7 = 231: 6,795,120. The U-Net baseline (``Unet3d``, 9 classes): no
    Linear in the 9 blocks (129 * (32+32+64+128+256+128+64+32+32) = 99,072 fewer) and a
    1-channel input (27 * 9 * 32 = 7,776 fewer): 6,681,993.
    """
    assert _count(ImgXV010UNet(9, PAPER), *_paper_inputs(9)) == 6_788_841
    assert _count(ImgXV010UNet(16, PAPER), *_paper_inputs(16)) == 6_795_120
    unet = ImgXV010UNet(9, PAPER, diffusion=False)
    assert _count(unet, *_paper_inputs(9, diffusion=False)) == 6_681_993


def test_output_shape_at_each_level_is_the_released_one():
    """32x32x16 with channels (c0..c3) = (32, 64, 128, 256): the stem and its block at full
    size with c0 (``unet_3d_time.py:92-105``), four ``Conv3dPool`` halvings with c0, c1, c2, c3
    (``unet_3d_time.py:106-118``: ``for ch in num_channels``), so 16x16x8x32, 8x8x4x64,
    4x4x2x128, 2x2x1x256; the decoder widths (c0, c0, c1, c2) reversed (``unet_3d_time.py:142``)
    give 4x4x2x128, 8x8x4x64, 16x16x8x32, 32x32x16x32, then the head 32x32x16x9."""
    model = ImgXV010UNet(9, PAPER)
    out, state = jax.eval_shape(
        lambda *a: model.init_with_output(jax.random.PRNGKey(0), *a,
                                          mutable=["params", "intermediates"]),
        *_paper_inputs(9))
    got = {k: v[0].shape for k, v in state["intermediates"].items()}
    assert got == {
        "encoder0": (1, 32, 32, 16, 32), "encoder1": (1, 16, 16, 8, 32),
        "encoder2": (1, 8, 8, 4, 64), "encoder3": (1, 4, 4, 2, 128),
        "encoder4": (1, 2, 2, 1, 256), "decoder3": (1, 4, 4, 2, 128),
        "decoder2": (1, 8, 8, 4, 64), "decoder1": (1, 16, 16, 8, 32),
        "decoder0": (1, 32, 32, 16, 32),
    }
    assert out.shape == (1, 32, 32, 16, 9) and out.dtype == jnp.float32


def test_sizes_not_divisible_by_16_name_the_shape():
    model = ImgXV010UNet(C, TINY)
    with pytest.raises(ValueError, match=r"divide by 16.*\(1, 32, 32, 8, 1\)"):
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 8, 1)),
                       jnp.ones((1, 32, 32, 8, C)), jnp.ones((1,)))


def _tiny_inputs(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    image = jnp.asarray(rng.normal(size=(batch, *SPATIAL, 1)), jnp.float32)
    x_t = jnp.asarray(rng.uniform(-1, 1, size=(batch, *SPATIAL, C)), jnp.float32)
    return image, x_t


def _params(model, *args, seed=1):
    """Random parameters in ``model.init``'s tree, norm scales/offsets and biases not trivial
    (so that a cancellation is not an artefact of zero offsets)."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
    rng = np.random.default_rng(seed)

    def fill(a):
        std = 1.0 / np.sqrt(np.prod(a.shape[:-1])) if len(a.shape) > 1 else 0.3
        return jnp.asarray(rng.normal(scale=std, size=a.shape), jnp.float32)

    return jax.tree.map(fill, shapes["params"])


@pytest.fixture(scope="module")
def tiny():
    model = ImgXV010UNet(C, TINY, conv_impl="lax3d")
    image, x_t = _tiny_inputs()
    t = jnp.array([0.0, 3.0])
    params = _params(model, image, x_t, t)
    out = jax.jit(model.apply)({"params": params}, image, x_t, t)
    return model, params, image, x_t, t, out


@pytest.mark.slow
def test_released_block_cancels_the_time_term(tiny):
    """The time Dense output is added per channel right before an InstanceNorm, which removes
    per-channel constants: the output for k = 0 and k = 999 is the same up to rounding, and the
    time Dense kernels get (numerically) zero gradient, while the other kernels do not."""
    model, params, image, x_t, t, out = tiny
    late = jax.jit(model.apply)({"params": params}, image, x_t, jnp.array([999.0, 500.0]))
    np.testing.assert_allclose(np.asarray(late), np.asarray(out), rtol=0, atol=2e-4)
    assert float(jnp.max(jnp.abs(out))) > 0.1  # not a trivially constant output

    def loss(p):
        return jnp.sum(model.apply({"params": p}, image, x_t, t) ** 2)

    grads = jax.jit(jax.grad(loss))(params)
    time_grad = max(float(jnp.max(jnp.abs(g["time_proj"]["kernel"])))
                    for name, g in grads.items() if "time_proj" in g)
    conv_grad = float(jnp.max(jnp.abs(grads["stem_block"]["conv1"]["kernel"])))
    assert conv_grad > 1e-2
    assert time_grad < 1e-4 * conv_grad


def test_output_depends_on_the_noisy_mask(tiny):
    model, params, image, x_t, t, out = tiny
    other = jax.jit(model.apply)({"params": params}, image, -x_t, t)
    assert float(jnp.max(jnp.abs(other - out))) > 1e-2


@pytest.mark.parametrize("impl", [i for i in CONV_IMPLS if i != "lax3d"])
def test_every_conv_impl_gives_the_same_output(tiny, impl):
    model, params, image, x_t, t, out = tiny
    other = ImgXV010UNet(C, TINY, conv_impl=impl)
    got = jax.jit(other.apply)({"params": params}, image, x_t, t)
    np.testing.assert_allclose(np.asarray(got), np.asarray(out), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_remat_same_output_and_gradients(tiny):
    model, params, image, x_t, t, out = tiny
    remat = ImgXV010UNet(C, TINY, conv_impl="lax3d", remat=True)

    def loss(m):
        return lambda p: jnp.mean(m.apply({"params": p}, image, x_t, t) ** 2)

    g_plain = jax.jit(jax.grad(loss(model)))(params)
    g_remat = jax.jit(jax.grad(loss(remat)))(params)
    np.testing.assert_allclose(np.asarray(jax.jit(remat.apply)({"params": params}, image, x_t, t)),
                               np.asarray(out), rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g_plain), jax.tree.leaves(g_remat), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-5)


def test_bfloat16_compute_keeps_float32_params_and_output(tiny):
    model, params, image, x_t, t, out = tiny
    half = ImgXV010UNet(C, TINY, conv_impl="lax3d", dtype=jnp.bfloat16)
    shapes = jax.eval_shape(half.init, jax.random.PRNGKey(0), image, x_t, t)
    assert {a.dtype for a in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    got = jax.jit(half.apply)({"params": params}, image, x_t, t)
    assert got.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(out)))
    assert float(jnp.max(jnp.abs(got - out))) < 0.1 * scale


@pytest.mark.slow
def test_gradient_accumulation_equals_the_full_batch_gradient():
    """InstanceNorm is per example and the U-Net loss draws nothing, so two microbatches of 2
    give the gradient of the batch of 4 (``steps.accumulate_gradients``)."""
    model = ImgXV010UNet(C, TINY, conv_impl="lax3d", diffusion=False)
    rng = np.random.default_rng(3)
    image = jnp.asarray(rng.normal(size=(4, *SPATIAL, 1)), jnp.float32)
    label = jnp.asarray(rng.integers(0, C, size=(4, *SPATIAL)), jnp.int32)
    params = _params(model, image)
    grad_fn = jax.value_and_grad(make_loss_fn(model, method="unet"), has_aux=True)
    key = jax.random.PRNGKey(0)
    (loss1, _), g1 = jax.jit(lambda p: accumulate_gradients(grad_fn, p, image, label, key, 1))(
        params)
    (loss2, _), g2 = jax.jit(lambda p: accumulate_gradients(grad_fn, p, image, label, key, 2))(
        params)
    np.testing.assert_allclose(float(loss2), float(loss1), rtol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-6)


def test_time_scales_follow_the_time_inputs_and_hand_values():
    """index: k = 3 goes to the sinusoid as 3; fraction: t_k / T = 0.75 as 750. The sinusoid of
    width 8 (half 4) is [cos(x f_i) | sin(x f_i)] with f_i = 10000^(-i/4)."""
    assert set(TIME_SCALES) == set(TIME_INPUTS)
    assert time_scale_for("index") == 1.0 and time_scale_for("fraction") == 1000.0
    with pytest.raises(ValueError, match="'step'"):
        time_scale_for("step")
    for time_input, t, x in (("index", 3.0, 3.0), ("fraction", 0.75, 750.0)):
        emb = sinusoidal_embedding(jnp.array([t]) * time_scale_for(time_input), 8)
        freqs = [10000.0 ** (-i / 4) for i in range(4)]
        expected = [math.cos(x * f) for f in freqs] + [math.sin(x * f) for f in freqs]
        np.testing.assert_allclose(np.asarray(emb[0]), expected, rtol=0, atol=2e-4)


@pytest.mark.parametrize("architecture,cls", [("diffseg3d", UNet), ("imgx_v010", ImgXV010UNet)])
def test_build_network_dispatches_and_sets_the_time_scale(architecture, cls):
    net = build_network(architecture, num_classes=C, channels=TINY, diffusion=True,
                        time_input="index")
    assert isinstance(net, cls) and net.time_scale == 1.0 and net.num_classes == C
    assert build_network(architecture, num_classes=C, channels=TINY, diffusion=True,
                         time_input="fraction").time_scale == 1000.0
    assert architecture in ARCHITECTURES


def test_build_network_names_an_unknown_architecture():
    with pytest.raises(ValueError, match="'resnet'"):
        build_network("resnet", num_classes=C, channels=TINY, diffusion=True)
