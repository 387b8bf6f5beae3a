"""Rehearse a GPU's reduced-precision float32 convs and matmuls on the CPU (tests only).

On an Ampere-or-newer NVIDIA GPU, XLA runs float32 convolutions and matmuls whose precision is
``DEFAULT`` (JAX's default) or ``HIGH`` in TF32: operands rounded to 10 mantissa bits, products
accumulated in float32. XLA:CPU ignores the precision setting (every float32 conv and dot is full
float32, whatever ``jax_default_matmul_precision`` says), so a test that compares two conv forms
at ``atol=1e-5`` passes on the CPU and fails on the GPU.

:func:`emulate_reduced_precision` re-registers the CPU lowering of ``dot_general`` and
``conv_general_dilated``: a float32 op whose precision is DEFAULT or HIGH gets its operands and
its result rounded (to TF32, or to bfloat16 for a TPU-like ``DEFAULT``); ops pinned to
``HIGHEST`` and bfloat16 ops are lowered as before. Autodiff's transposed convs and dots carry
the forward op's precision, so gradients are covered too. This reproduces the size of the
GPU's error (about 2^-11 relative), not its exact values (accumulation order and conv
algorithms differ). Opt-in: ``DIFFSEG3D_EMULATE_PRECISION=tf32 pytest tests/core/...``
(``tests/core/conftest.py``); nothing changes unless asked for.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

MODES = ("tf32", "bf16")


def round_to_tf32(x: jax.Array) -> jax.Array:
    """float32 ``x`` rounded to nearest-even at TF32's 10 mantissa bits (same shape, float32).

    Adds half an ulp of the 13 dropped bits (plus the tie-to-even bit) to the raw bits, then
    clears them; overflow into the exponent is the correct rounding. NaN/inf are not expected.
    """
    bits = lax.bitcast_convert_type(x, jnp.uint32)
    bits = bits + jnp.uint32(0xFFF) + ((bits >> 13) & jnp.uint32(1))
    return lax.bitcast_convert_type(bits & jnp.uint32(0xFFFFE000), jnp.float32)


def _round_to_bf16(x: jax.Array) -> jax.Array:
    return x.astype(jnp.bfloat16).astype(jnp.float32)


def _is_reduced(precision) -> bool:
    """True for the precisions a GPU runs in TF32: ``None`` (= DEFAULT), DEFAULT, HIGH."""
    if precision is None:
        return True
    if isinstance(precision, tuple):
        return any(_is_reduced(p) for p in precision)
    return precision in (lax.Precision.DEFAULT, lax.Precision.HIGH)


def _round_values(ctx, values, avals, rounder):
    """Lower ``rounder`` on each float32 MLIR value of ``values`` (others unchanged)."""
    from jax.interpreters import mlir

    out = []
    for value, aval in zip(values, avals, strict=True):
        if aval.dtype == np.float32:
            sub = ctx.replace(primitive=None, avals_in=[aval], avals_out=[aval])
            (value,) = mlir.lower_fun(rounder, multiple_results=False)(sub, value)
        out.append(value)
    return out


def _rounding_rule(original, rounder):
    """A lowering rule for a reduced-precision op with float32 operands: round the operands,
    lower as ``original``, round the result; other ops lower as ``original``. Signature
    ``(ctx, lhs, rhs, **params)`` as MLIR lowering rules take them.

    Rounding the result as well stands in for the algorithm-dependent part of the GPU's error
    (its conv algorithms can round different intermediate values, e.g. Winograd's transformed
    operands): on the H200 (2026-11-28) the slice conv and the 3D conv, which compute the same
    sums, disagreed beyond 1e-5, while operand rounding alone rounds both alike.
    """

    def rule(ctx, lhs, rhs, **params):
        if not _is_reduced(params.get("precision")) or all(
            aval.dtype != np.float32 for aval in ctx.avals_in
        ):
            return original(ctx, lhs, rhs, **params)
        lhs, rhs = _round_values(ctx, (lhs, rhs), ctx.avals_in, rounder)
        results = original(ctx, lhs, rhs, **params)
        return _round_values(ctx, results, ctx.avals_out, rounder)

    return rule


def emulate_reduced_precision(mode: str = "tf32") -> None:
    """From now on in this process, CPU float32 dots/convs at DEFAULT or HIGH precision round
    their operands and result to ``mode`` (``"tf32"`` or ``"bf16"``). Irreversible (tests only).
    Call before anything is compiled: jitted functions already in the cache keep their code.
    """
    # JAX internals, imported here so that the rounding alone works whatever JAX moves.
    from jax._src.interpreters import mlir
    from jax._src.lax import convolution as lax_convolution
    from jax._src.lax import lax as lax_internal

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rounder = round_to_tf32 if mode == "tf32" else _round_to_bf16
    for prim in (lax_internal.dot_general_p, lax_convolution.conv_general_dilated_p):
        original = mlir._platform_specific_lowerings["cpu"][prim].rule
        mlir.register_lowering(prim, _rounding_rule(original, rounder), platform="cpu")
