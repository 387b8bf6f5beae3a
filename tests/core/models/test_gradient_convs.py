"""The gradient of the diffusion U-Net in the form ``conv_impl: auto`` picks on GPUs and TPUs
holds no convolution with an lhs dilation above 1 and a window larger than 3.

Such a conv is the kernel gradient of ``lax.conv_transpose`` (the ``lax3d`` up-convs): the
input dilated by 2 correlated with the output cotangent, whose window is a U-Net level's whole
volume. XLA:GPU runs it as a forward conv over a zero-interleaved copy of the input (see
``core/models/conv.py``), so it must not come back into the accelerator pick unnoticed. The
check reads the jaxpr of ``jax.grad`` (traced on the CPU, nothing compiled), walking every
nested jaxpr (``checkpoint``/remat, ``scan``, ``cond``, ``pjit``, ``custom_vjp``/``custom_jvp``),
and names each offending conv by its layer (the equation's name stack, e.g.
``transpose(jvp(UNet))/up0_upsample``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest
from diffseg3d.core.models import UNet
from diffseg3d.core.models.conv import resolve_conv_impl
from jax import lax
from jax.extend.core import jaxprs_in_params

#: A window dim above this, together with an lhs dilation above 1, is a whole-volume gradient.
MAX_WINDOW = 3
SPATIAL = (32, 32, 16)
CHANNELS = (4, 8, 8, 8)  # four levels, as the paper's U-Net: three up-convs
CLASSES = 3


def dilated_volume_convs(jaxpr, max_window: int = MAX_WINDOW, scope: str = "") -> list[dict]:
    """Every ``conv_general_dilated`` in ``jaxpr`` and its nested jaxprs with
    ``max(lhs_dilation) > 1`` and some window (kernel spatial) dim above ``max_window``.

    Returns ``[{"layer": name stack, "lhs_dilation": (...), "window": (...)}]`` in program order;
    nested equations' names are prefixed with their enclosing equation's name stack.
    """
    found = []
    for eqn in jaxpr.eqns:
        name = "/".join(p for p in (scope, str(eqn.source_info.name_stack)) if p)
        if eqn.primitive.name == "conv_general_dilated":
            rhs_shape = eqn.invars[1].aval.shape
            window = tuple(rhs_shape[d] for d in eqn.params["dimension_numbers"].rhs_spec[2:])
            dilation = tuple(eqn.params["lhs_dilation"])
            if max(dilation) > 1 and max(window) > max_window:
                found.append({"layer": name, "lhs_dilation": dilation, "window": window})
        for inner in jaxprs_in_params(eqn.params):
            found += dilated_volume_convs(inner, max_window, name)
    return found


def conv_count(jaxpr) -> int:
    """All ``conv_general_dilated`` equations, nested ones included."""
    return sum(int(eqn.primitive.name == "conv_general_dilated")
               + sum(conv_count(j) for j in jaxprs_in_params(eqn.params)) for eqn in jaxpr.eqns)


def assert_no_dilated_volume_convs(jaxpr, what: str) -> None:
    bad = dilated_volume_convs(jaxpr)
    if bad:
        rows = "\n".join(f"  {b['layer']}: lhs_dilation {b['lhs_dilation']}, window "
                         f"{'x'.join(map(str, b['window']))}" for b in bad)
        raise AssertionError(f"{what}: {len(bad)} conv(s) with lhs dilation > 1 and a window "
                             f"above {MAX_WINDOW} in the gradient:\n{rows}")


@functools.cache
def unet_grad_jaxpr(conv_impl: str, remat: bool):
    """The jaxpr of ``jax.grad`` of a squared-output loss w.r.t. the diffusion U-Net's params
    (batch 1, ``SPATIAL``, tiny channels); abstract parameters, nothing runs."""
    model = UNet(num_classes=CLASSES, channels=CHANNELS, num_res_blocks=1, diffusion=True,
                 remat=remat, conv_impl=conv_impl)
    image = jnp.zeros((1, *SPATIAL, 1))
    x_t = jnp.zeros((1, *SPATIAL, CLASSES))
    t = jnp.array([0.5])
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), image, x_t, t)

    def loss(p):
        return jnp.sum(model.apply(p, image, x_t, t) ** 2)

    return jax.make_jaxpr(jax.grad(loss))(params).jaxpr


@pytest.mark.parametrize("remat", [True, False])
@pytest.mark.parametrize("backend", ["gpu", "tpu"])
def test_the_accelerator_pick_has_no_dilated_whole_volume_conv_in_its_gradient(backend, remat):
    impl = resolve_conv_impl("auto", backend)
    jaxpr = unet_grad_jaxpr(impl, remat)
    assert conv_count(jaxpr) >= 10  # the 3x3x3 convs and their gradients are there: not vacuous
    assert_no_dilated_volume_convs(jaxpr, f"conv_impl auto on {backend} ({impl})")


@pytest.mark.parametrize("remat", [True, False])
def test_lax3d_holds_exactly_the_three_up_conv_kernel_gradients(remat):
    bad = dilated_volume_convs(unet_grad_jaxpr("lax3d", remat))
    by_layer = {b["layer"].rsplit("/", 1)[-1]: b for b in bad}
    assert len(bad) == 3 and set(by_layer) == {"up0_upsample", "up1_upsample", "up2_upsample"}
    # Level l's whole volume: 32x32x16, 16x16x8, 8x8x4.
    assert by_layer["up0_upsample"]["window"] == SPATIAL
    assert by_layer["up1_upsample"]["window"] == (16, 16, 8)
    assert by_layer["up2_upsample"]["window"] == (8, 8, 4)
    assert all(b["lhs_dilation"] == (2, 2, 2) and "transpose(" in b["layer"] for b in bad)
    with pytest.raises(AssertionError, match=r"3 conv\(s\)[\s\S]*up0_upsample: lhs_dilation "
                                             r"\(2, 2, 2\), window 32x32x16"):
        assert_no_dilated_volume_convs(unet_grad_jaxpr("lax3d", remat), "lax3d")


# --------------------------------------------------------------------------------------------
# The walker itself, on a conv hidden in each kind of nested jaxpr.

_DN = ("NHWDC", "HWDIO", "NHWDC")


def _conv(x, k, lhs_dilation=(2, 2, 2)):
    with jax.named_scope("bad_layer"):
        return lax.conv_general_dilated(x, k, (1, 1, 1), ((0, 0),) * 3, lhs_dilation=lhs_dilation,
                                        dimension_numbers=_DN)


@jax.custom_vjp
def _custom(x, k):
    return _conv(x, k)


_custom.defvjp(lambda x, k: (_conv(x, k), None), lambda res, g: (None, None))


@jax.custom_jvp
def _custom_jvp(x, k):
    return _conv(x, k)


_custom_jvp.defjvp(lambda primals, tangents: (_conv(*primals), _conv(*primals)))


def _scan(x, k):
    return lax.scan(lambda c, _: (c, _conv(x, k)), 0.0, None, length=2)[1]


def _cond(x, k):
    return lax.cond(True, lambda: _conv(x, k), lambda: _conv(x, k))


_WRAPPERS = {
    "checkpoint": jax.checkpoint(_conv),
    "scan": _scan,
    "cond": _cond,
    "pjit": jax.jit(_conv),
    "custom_vjp": _custom,
    "custom_jvp": _custom_jvp,
    "jit(scan(checkpoint))": jax.jit(lambda x, k: lax.scan(
        lambda c, _: (c, jax.checkpoint(_conv)(x, k)), 0.0, None, length=1)[1]),
}


@pytest.mark.parametrize("wrapper", list(_WRAPPERS))
def test_walker_finds_a_conv_nested_in(wrapper):
    x, k = jnp.zeros((1, 5, 5, 5, 2)), jnp.zeros((4, 4, 4, 2, 3))
    jaxpr = jax.make_jaxpr(_WRAPPERS[wrapper])(x, k).jaxpr
    assert jaxpr.eqns[0].primitive.name != "conv_general_dilated"  # really nested
    bad = dilated_volume_convs(jaxpr)
    assert len(bad) >= 1 and all(b["window"] == (4, 4, 4) for b in bad)
    assert all(b["layer"].endswith("bad_layer") for b in bad), bad


def test_walker_ignores_small_windows_and_undilated_large_ones():
    x = jnp.zeros((1, 5, 5, 5, 2))
    small = jax.make_jaxpr(_conv)(x, jnp.zeros((3, 3, 3, 2, 3))).jaxpr
    undilated = jax.make_jaxpr(functools.partial(_conv, lhs_dilation=(1, 1, 1)))(
        x, jnp.zeros((4, 4, 4, 2, 3))).jaxpr
    assert conv_count(small) == conv_count(undilated) == 1
    assert dilated_volume_convs(small) == [] and dilated_volume_convs(undilated) == []
