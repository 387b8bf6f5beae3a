"""The kernel gradient of a "SAME" conv as one matmul per kernel tap.

Autodiff of ``lax.conv_general_dilated`` gives the kernel gradient as another convolution, with
the batch and feature dims swapped and the whole output as the "window". XLA:CPU runs that form
far below its matmul rate: in the slice-form U-Net it was the slowest of the three convs of a
layer (forward, input gradient, kernel gradient). Written as one matmul per tap,

    dk[a, b] = sum_p s[p + (a - ky // 2, b - kz // 2)]^T g[p]
             = sum_q s[q]^T g_pad[q + (2 (ky // 2) - a, 2 (kz // 2) - b)],

each a ``(pixels, cin)^T x (pixels, cout)`` product against a shifted copy of the (smaller)
output cotangent, it runs at matmul speed. On the unstacked 3D input (27 taps, ``lean`` in
``conv.conv3d_slices``) it does more, smaller products but needs no stacked copy of the input,
which is what the memory-bound (rematerialising) U-Net wants. Timings: ``docs/BENCHMARKS.md``.

The shifted copies are the price. XLA:CPU's scheduler would make all ``ky * kz`` of them at
once (``ky * kz`` copies of a paper-size cotangent); each copy is therefore made to depend on
the previous tap's product, so one copy is alive at a time.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
from diffseg3d.core.models.ordering import after
from jax import lax


def conv_kernel_grad(x: jax.Array, g: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
    """Gradient w.r.t. ``k`` of ``sum(conv_same(x, k) * g)``, one matmul per kernel tap.

    ``x`` ``(n, *S, cin)``, ``g`` ``(n, *S, cout)``, ``kernel_shape`` ``(*k, cin, cout)`` with
    odd sizes ``k`` ("SAME" zero padding, stride 1, cross-correlation as ``lax``), any number of
    spatial dims. Tap ``t`` (offset ``t - k // 2``) is ``x^T g_pad[shifted]``: a
    ``(n * prod(S), cin)^T x (n * prod(S), cout)`` product accumulated in float32. Returns
    ``(*k, cin, cout)`` in ``x.dtype``.
    """
    *ks, cin, cout = kernel_shape
    spatial = g.shape[1:-1]
    if len(ks) != len(spatial) or any(k % 2 != 1 for k in ks):
        raise ValueError(
            f"conv_kernel_grad needs one odd kernel size per spatial dim of g {g.shape}, "
            f"got kernel {kernel_shape}"
        )
    pads = [k // 2 for k in ks]
    g_pad = jnp.pad(g, ((0, 0), *[(p, p) for p in pads], (0, 0)))
    rows = x.reshape(-1, cin)
    taps = []
    for tap in itertools.product(*[range(k) for k in ks]):
        window = (slice(None),) + tuple(
            slice(2 * p - t, 2 * p - t + n) for p, t, n in zip(pads, tap, spatial, strict=True)
        )
        shifted = after(g_pad[window], taps[-1] if taps else None)
        taps.append(lax.dot_general(
            rows, shifted.reshape(-1, cout), (((0,), (0,)), ((), ())),
            preferred_element_type=jnp.float32,
        ))
    return jnp.stack(taps).reshape(*ks, cin, cout).astype(x.dtype)
