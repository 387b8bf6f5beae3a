"""Scheduling order without changing values: ``after(x, previous)``.

XLA may compute an instruction as early, and keep its result as long, as its data dependencies
allow. On XLA:CPU that undoes memory plans written in program order: ``jax.checkpoint``'s
``optimization_barrier`` is dropped early in the pipeline, so a "recomputed" forward pass is
hoisted into the forward pass, and independent backward-pass products (kernel gradients of
several layers) are interleaved, each keeping its large temporaries alive. A fake data
dependency is the one ordering XLA must respect.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def after(x: jax.Array, previous: jax.Array | None) -> jax.Array:
    """``x`` (exactly, up to the sign of zeros), not computable before ``previous`` exists.

    ``x + 0 * previous.flat[0]``: XLA keeps float multiplies by zero (``nan * 0`` is nan), so
    the dependency survives simplification. A non-finite ``previous[0]`` makes the result nan;
    where ``previous`` is a gradient, the step is not finite then anyway. ``previous=None``
    returns ``x``.
    """
    if previous is None:
        return x
    first = previous.reshape(-1)[:1].astype(x.dtype).reshape(())
    return x + jnp.zeros((), x.dtype) * first
