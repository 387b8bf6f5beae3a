"""Convolutions of the U-Net in numerically equivalent forms, selected by ``conv_impl``.

Shapes are channels last: inputs ``(batch, *spatial, in_channels)``, kernels
``(*kernel_size, in_channels, out_channels)``. Every form takes the *same* kernel array, so a
checkpoint trained with one form runs with the others.

Each form fixes how the two kinds of conv are computed: the ``k x k x k`` stride-1 "SAME" conv
of the residual blocks and the stem, and the 2x2x2 stride-2 down-/up-sampling convs.

=============== ============================ =========================================
``conv_impl``   ``k x k x k`` stride 1       2x2x2 stride-2 down / up
=============== ============================ =========================================
``"lax3d"``     native 3D conv               strided conv / ``lax.conv_transpose``
``"slices"``    2D convs over X-slices       space-to-depth / depth-to-space + matmul
``"lax3d_s2d"`` native 3D conv               space-to-depth / depth-to-space + matmul
``"auto"``      ``"slices"`` on CPU, ``"lax3d_s2d"`` on GPU and TPU
=============== ============================ =========================================

- ``"lax3d"``: ``lax.conv_general_dilated`` over all spatial dims (cuDNN on GPU), strided conv
  for down-sampling and ``lax.conv_transpose`` (lhs dilation) for up-sampling.
- ``"slices"``: a 3D ``k x k x k`` conv computed with 2D ``k x k`` convs over the last two
  spatial dims, the first spatial dim folded into the batch (no transpose: it sits next to the
  batch axis). XLA:CPU runs 2D convs much faster than 3D ones. Forward: below 64 input
  channels a sum of ``k`` 2D convs on shifted slices, from 64 up ONE 2D conv with ``k * cout``
  outputs whose slices are shifted and summed (``_conv3d_slices_out``); ``lean`` (remat): ONE 2D
  conv over the ``k`` shifted slices stacked on channels, in X-blocks. Backward (custom VJP):
  the input gradient is the same slice conv of the cotangent with the flipped kernel, the
  kernel gradient one matmul per tap (``kernel_grad.py``). The 2x2x2 stride-2 down-/up-sampling
  convs are exact space-to-depth / depth-to-space reshapes around one matmul (their autodiff
  gradients are matmuls and reshapes too).
- ``"lax3d_s2d"``: the accelerator form: the native 3D conv of ``"lax3d"`` for ``k x k x k``,
  the reshape + matmul down/up forms of ``"slices"``. Its point: the gradients of a strided
  conv and of a transposed (lhs-dilated) conv become plain matmuls instead of convolutions.
- ``"auto"``: ``"slices"`` on the CPU backend, ``"lax3d_s2d"`` on GPU and TPU. Resolved at trace
  time from ``jax.default_backend()``, or from the backend a program is being compiled for
  when that is another (``with target_backend("gpu"):``, as a compile without the device does:
  ``experiments/gpu_plan``).

Why ``"lax3d_s2d"`` and not ``"lax3d"`` off the CPU. The kernel gradient of
``lax.conv_transpose`` (the up-convs of ``"lax3d"``) is itself a convolution: the input,
dilated by 2 (``lhs_dilation=(2, 2, 2)``), correlated with the output cotangent, whose window is
the level's whole volume (256x256x48 at the top level of the paper's size). XLA:GPU does not
match that as a cuDNN backward-filter conv; it runs it as a forward conv over a zero-interleaved
padded copy of the input, mostly multiplying zeros. Public reports:
https://github.com/jax-ml/jax/issues/31662 (a bf16 ConvTranspose3D gradient 32x slower than
torch), https://github.com/openxla/xla/issues/34273 (the same HLO),
https://github.com/jax-ml/jax/issues/8537 (3D transposed convs a blind spot of cuDNN),
https://github.com/patrick-kidger/equinox/pull/1259 (about 30x faster after replacing
``lhs_dilation`` by explicit padding). On the paper's 256x256x48 step on an H200 the
``"lax3d"`` train step took 0.88 s against a 22 ms forward pass (2026-11-28). ``"lax3d_s2d"``
has no such conv: its down/up convs and their gradients are reshapes around one matmul, which
cuBLAS (GPU) and the MXU (TPU) run natively. TPUs get the same form: the dilated whole-volume
conv is in the program XLA receives on every backend (in 3D, 7 of 8 of its input positions are
inserted zeros); whether XLA:TPU's conv emitter skips those zeros is not documented publicly;
a matmul is the TPU's native operation; and one rule for both accelerators lets
``tests/core/models/test_gradient_convs.py`` (no conv with lhs dilation and a window above 3 in
the gradient of either pick) guard both. Neither speed-up is measured by this project yet: no
GPU or TPU figure of ``"lax3d_s2d"`` exists. ``conv_impl: lax3d`` stays selectable.

Why several forms: XLA:CPU's 3D convs and strided / transposed convs run far below its 2D conv
and matmul rates, so on the CPU the slice form and the reshapes around one matmul are several
times faster; on GPU/TPU the native 3x3x3 convs are expected to be.
``benchmarks/probes/conv_probe.py`` and ``benchmarks/gpu/conv_layers.py`` measure the forms;
the dated numbers are in ``docs/BENCHMARKS.md`` and ``benchmarks/results/``.

2D inputs (two spatial dims): the ``k x k`` conv is always the native 2D conv; the down/up
forms follow the table.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math

import jax
import jax.numpy as jnp
from diffseg3d.core.models.kernel_grad import conv_kernel_grad
from diffseg3d.core.models.ordering import after
from jax import lax

CONV_IMPLS = ("auto", "slices", "lax3d", "lax3d_s2d")

#: The concrete forms (every ``conv_impl`` but ``"auto"``), all valid on every backend.
CONCRETE_CONV_IMPLS = ("slices", "lax3d", "lax3d_s2d")

#: Forms whose 2x2x2 stride-2 down/up convs are space-to-depth / depth-to-space + one matmul.
_RESHAPE_MATMUL_RESAMPLING = ("slices", "lax3d_s2d")


#: The backend programs traced now are compiled for, where it is not the default backend.
_TARGET_BACKEND: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "diffseg3d_target_backend", default=None)


@contextlib.contextmanager
def target_backend(backend: str):
    """Within the block, ``"auto"`` resolves for ``backend`` (``"gpu"``, ``"tpu"``, ``"cpu"``)
    instead of ``jax.default_backend()``: for a program traced on the CPU and compiled for a
    device this machine does not have (`jax.experimental.topologies`)."""
    token = _TARGET_BACKEND.set(backend)
    try:
        yield
    finally:
        _TARGET_BACKEND.reset(token)


def resolve_conv_impl(conv_impl: str, backend: str | None = None) -> str:
    """Map ``conv_impl`` to a concrete form: ``"slices"``, ``"lax3d"`` or ``"lax3d_s2d"``.

    ``"auto"`` picks ``"slices"`` on CPU and ``"lax3d_s2d"`` elsewhere (GPU, TPU: why in the
    module docstring). ``backend`` defaults to the `target_backend` of the enclosing block, else
    ``jax.default_backend()``.
    """
    if conv_impl not in CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {conv_impl!r}")
    if conv_impl != "auto":
        return conv_impl
    backend = backend or _TARGET_BACKEND.get() or jax.default_backend()
    return "slices" if backend == "cpu" else "lax3d_s2d"


def _dimension_numbers(rank: int) -> tuple[str, str, str]:
    spatial = "HWD"[:rank]
    return (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C")


def conv_lax(x: jax.Array, kernel: jax.Array, stride: int = 1, padding: str = "SAME") -> jax.Array:
    """N-D cross-correlation ``(batch, *S, cin)`` x ``(*k, cin, cout)`` -> ``(batch, *S', cout)``.

    ``S' = S`` for "SAME" stride 1, ``S // stride`` for "VALID" with ``k == stride``.
    """
    rank = x.ndim - 2
    return lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(stride,) * rank,
        padding=padding,
        dimension_numbers=_dimension_numbers(rank),
    )


def _check_slices_kernel(x: jax.Array, kernel: jax.Array) -> None:
    cin = x.shape[-1]
    if kernel.shape[3] != cin:
        raise ValueError(
            f"kernel in_channels {kernel.shape[3]} != input channels {cin} (x {x.shape})"
        )
    if any(k % 2 != 1 for k in kernel.shape[:3]):
        raise ValueError(f"conv3d_slices needs odd kernel sizes, got kernel {kernel.shape}")


def _stack_padded(xp: jax.Array, kx: int) -> jax.Array:
    """``(batch, m + kx - 1, Y, Z, c)`` (padded along X) -> ``(batch * m, Y, Z, kx * c)``."""
    b, npad, ny, nz, c = xp.shape
    m = npad - (kx - 1)
    stacked = jnp.concatenate([xp[:, d : d + m] for d in range(kx)], axis=-1)
    return stacked.reshape(b * m, ny, nz, kx * c)


def _stack_slices(x: jax.Array, kx: int) -> jax.Array:
    """``(batch, X, Y, Z, c) -> (batch * X, Y, Z, kx * c)``: slice ``x + d - kx // 2`` (zero
    outside) on channels ``d * c : (d + 1) * c``."""
    pad = kx // 2
    return _stack_padded(jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0))), kx)


#: ``lean`` slice convs work on blocks of X-slices whose stacked input is at most this big:
#: the stacked copy and the scratch YNNPACK allocates beside it (about as large, outside XLA's
#: buffer plan) then scale with the block, not the volume.
LEAN_BLOCK_BYTES = 256 * 2**20


def _lean_blocks(x_shape: tuple[int, ...], kx: int) -> int:
    """Number of X-blocks for a ``lean`` conv of ``x`` ``(batch, X, Y, Z, cin)``: the smallest
    that keeps each block's float32 stacked input within :data:`LEAN_BLOCK_BYTES` (at most X;
    float32 also for bfloat16 compute, as XLA:CPU converts conv inputs to float32)."""
    stacked = math.prod(x_shape) * kx * 4
    return max(1, min(x_shape[1], -(-stacked // LEAN_BLOCK_BYTES)))


def _conv3d_slices_forward(x: jax.Array, kernel: jax.Array, lean: bool = False) -> jax.Array:
    b, nx, ny, nz, _ = x.shape
    kx, ky, kz, cin, cout = kernel.shape
    if not lean:
        # On XLA:CPU the output form (one wide 2D conv, no input copies) is faster from 64
        # input channels on, the sum of kx 2D convs below that (benchmarks/probes/conv_probe.py).
        if cin >= 64:
            return _conv3d_slices_out(x, kernel)
        return _conv3d_slices_sum(x, kernel)
    # (kx, ky, kz, cin, cout) -> (ky, kz, kx * cin, cout), channel index d * cin + c as stacked.
    kernel2d = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(ky, kz, kx * cin, cout)
    blocks = _lean_blocks(x.shape, kx)
    pad = kx // 2
    xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0)))
    bounds = [round(i * nx / blocks) for i in range(blocks + 1)]
    ys = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        # Each block starts after the previous one is done, so one block's temporaries live.
        part = after(xp[:, lo : hi + 2 * pad], ys[-1] if ys else None)
        ys.append(conv_lax(_stack_padded(part, kx), kernel2d).reshape(b, hi - lo, ny, nz, cout))
    return jnp.concatenate(ys, axis=1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3d_slices(x: jax.Array, kernel: jax.Array, lean: bool = False) -> jax.Array:
    """3D "SAME" stride-1 conv from 2D convs over the first spatial dim's shifted slices.

    ``x`` ``(batch, X, Y, Z, cin)``, ``kernel`` ``(kx, ky, kz, cin, cout)``, all sizes odd.
    ``y[b, x] = sum_d conv2d(x_pad[b, x + d], kernel[d])``: forward as
    :func:`_conv3d_slices_sum` (below 64 input channels) or :func:`_conv3d_slices_out` (from 64
    up); with ``lean``, as ONE 2D conv with slice ``d`` stacked on input channels
    ``d * cin : (d + 1) * cin``, in X-blocks of at most :data:`LEAN_BLOCK_BYTES`.
    Returns ``(batch, X, Y, Z, cout)``; equal to ``conv_lax(x, kernel)`` up to float rounding.

    Custom VJP (same gradients as autodiff, up to rounding): only ``x`` and ``kernel`` are saved,
    not the ``kx``-times larger stacked input; the input gradient is the same slice conv of the
    output cotangent with the flipped, in/out-transposed kernel (exact for odd sizes, "SAME"),
    and the kernel gradient is ``kernel_grad.conv_kernel_grad``, one matmul per tap (faster on
    XLA:CPU than autodiff's conv form): on the restacked input (9 taps) by default, on ``x``
    itself (27 taps, somewhat slower, but no ``kx``-times stacked copy alive) with
    ``lean=True``, the choice of the rematerialising (memory-bound) U-Net.
    """
    _check_slices_kernel(x, kernel)
    return _conv3d_slices_forward(x, kernel, lean)


def _slices_fwd(x, kernel, lean):
    _check_slices_kernel(x, kernel)
    return _conv3d_slices_forward(x, kernel, lean), (x, kernel)


def _slices_bwd(lean, res, g):
    x, kernel = res
    kx, ky, kz, cin, cout = kernel.shape
    b, nx, ny, nz, _ = x.shape
    g = g.astype(x.dtype)
    flipped = jnp.flip(kernel, (0, 1, 2)).swapaxes(3, 4)
    dx = _conv3d_slices_forward(g, flipped, lean)
    if lean:
        dk = conv_kernel_grad(x, g, kernel.shape)
        # The kernel gradient only feeds the optimiser, so XLA would defer it and keep ``g`` and
        # its padded copy alive across later layers; the input gradient now waits for it.
        dx = after(dx, dk)
    else:
        dk2 = conv_kernel_grad(
            _stack_slices(x, kx), g.reshape(b * nx, ny, nz, cout), (ky, kz, kx * cin, cout)
        )
        dk = dk2.reshape(ky, kz, kx, cin, cout).transpose(2, 0, 1, 3, 4)
    return dx, dk.astype(kernel.dtype)


conv3d_slices.defvjp(_slices_fwd, _slices_bwd)


def _conv3d_slices_sum(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Same result as :func:`conv3d_slices`, as a sum of ``kx`` separate 2D convs.

    The forward form of :func:`conv3d_slices` for fewer than 64 input channels (why: see
    ``_conv3d_slices_forward``).
    """
    b, nx, ny, nz, cin = x.shape
    kx = kernel.shape[0]
    pad = kx // 2
    xp = jnp.pad(x, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0)))
    y = None
    for d in range(kx):
        yd = conv_lax(xp[:, d : d + nx].reshape(b * nx, ny, nz, cin), kernel[d])
        y = yd if y is None else y + yd
    return y.reshape(b, nx, ny, nz, kernel.shape[-1])


def _conv3d_slices_out(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Same result as :func:`conv3d_slices`: ONE 2D conv with ``kx * cout`` outputs, then shifts.

    ``z = conv2d(x, [kernel[0] | ... | kernel[kx-1]])`` on the unshifted input (first spatial
    dim folded into the batch, no input copies); ``y[x] = sum_d z_d[x + d - kx // 2]`` with
    zeros outside. The extra memory is on the output (``kx * cout``) instead of the input.
    The forward form of :func:`conv3d_slices` from 64 input channels up.
    """
    b, nx, ny, nz, cin = x.shape
    kx, ky, kz, _, cout = kernel.shape
    pad = kx // 2
    # (kx, ky, kz, cin, cout) -> (ky, kz, cin, kx * cout), output channel d * cout + o.
    kernel2d = jnp.transpose(kernel, (1, 2, 3, 0, 4)).reshape(ky, kz, cin, kx * cout)
    z = conv_lax(x.reshape(b * nx, ny, nz, cin), kernel2d).reshape(b, nx, ny, nz, kx, cout)
    z = jnp.pad(z, ((0, 0), (pad, pad), (0, 0), (0, 0), (0, 0), (0, 0)))
    y = z[:, 0:nx, ..., 0, :]
    for d in range(1, kx):
        y = y + z[:, d : d + nx, ..., d, :]
    return y


def conv_same(x: jax.Array, kernel: jax.Array, impl: str, lean: bool = False) -> jax.Array:
    """Stride-1 "SAME" conv in the concrete form ``impl`` (the slice form for ``"slices"`` on
    3D inputs, the native conv otherwise); ``lean``: the slice form's low-memory kernel
    gradient (see :func:`conv3d_slices`)."""
    if impl == "slices" and x.ndim == 5:
        return conv3d_slices(x, kernel, lean)
    return conv_lax(x, kernel)


def _downsample_space_to_depth(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """2x...x2 stride-2 conv as space-to-depth + one matmul.

    ``x`` ``(batch, *spatial, cin)`` with every spatial size even, ``kernel`` ``(2, ..., 2, cin,
    cout)``. ``y[p] = sum_o x[2p + o] @ kernel[o]`` over offsets ``o`` in ``{0, 1}^rank``.
    Returns ``(batch, *spatial // 2, cout)``.
    """
    b, *spatial, cin = x.shape
    rank = len(spatial)
    cout = kernel.shape[-1]
    split = [b]
    for n in spatial:
        split += [n // 2, 2]
    x = x.reshape(*split, cin)
    perm = (
        [0] + [1 + 2 * i for i in range(rank)] + [2 + 2 * i for i in range(rank)] + [1 + 2 * rank]
    )
    x = x.transpose(perm).reshape(b, *[n // 2 for n in spatial], (2**rank) * cin)
    return x @ kernel.reshape((2**rank) * cin, cout)


def _upsample_depth_to_space(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """2x...x2 stride-2 transposed conv as one matmul + depth-to-space.

    ``x`` ``(batch, *spatial, cin)``, ``kernel`` ``(2, ..., 2, cin, cout)``;
    ``y[2p + o] = x[p] @ kernel[o]``. Returns ``(batch, *spatial * 2, cout)``.
    """
    b, *spatial, cin = x.shape
    rank = len(spatial)
    cout = kernel.shape[-1]
    k = kernel.reshape(2**rank, cin, cout).transpose(1, 0, 2).reshape(cin, (2**rank) * cout)
    y = (x @ k).reshape(b, *spatial, *([2] * rank), cout)
    perm = [0]
    for i in range(rank):
        perm += [1 + i, 1 + rank + i]
    perm += [1 + 2 * rank]
    return y.transpose(perm).reshape(b, *[2 * n for n in spatial], cout)


def _upsample_lax(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """Same as :func:`_upsample_depth_to_space` with ``lax.conv_transpose``.

    ``lax.conv_transpose`` (``transpose_kernel=False``) correlates the dilated input with the
    kernel, which places ``kernel[1 - o]`` at offset ``o``; flipping the kernel gives
    ``y[2p + o] = x[p] @ kernel[o]``.
    """
    rank = x.ndim - 2
    flipped = kernel[(slice(None, None, -1),) * rank]
    return lax.conv_transpose(
        x,
        flipped,
        strides=(2,) * rank,
        padding="VALID",
        dimension_numbers=_dimension_numbers(rank),
    )


def downsample(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
    """Stride-2 2x..x2 conv in the form ``impl``; ``(batch, *S, cin) -> (batch, *S // 2, cout)``."""
    if impl in _RESHAPE_MATMUL_RESAMPLING:
        return _downsample_space_to_depth(x, kernel)
    return conv_lax(x, kernel, stride=2, padding="VALID")


def upsample(x: jax.Array, kernel: jax.Array, impl: str) -> jax.Array:
    """Stride-2 2x..x2 transposed conv; ``(batch, *S, cin) -> (batch, *S * 2, cout)``."""
    if impl in _RESHAPE_MATMUL_RESAMPLING:
        return _upsample_depth_to_space(x, kernel)
    return _upsample_lax(x, kernel)
