"""Probe: which 3x3x3 conv form is faster on this backend (forward + backward)?

Compares, for ``(batch, X, Y, Z, C)`` inputs and ``C -> C`` kernels:

- ``lax3d``: ``lax.conv_general_dilated`` 3D;
- ``slices``: one 2D conv over the 3 stacked X-shifted slices (``3 C`` input channels);
- ``slices_sum``: the sum of three 2D convs over X-shifted slices;
- ``slices_out``: one 2D conv with ``3 C`` outputs on the unshifted input, outputs shifted;

and the 2x2x2 stride-2 down-/up-sampling convs (``C -> 2C`` / ``2C -> C``): ``lax`` strided /
transposed conv vs the space-to-depth / depth-to-space matmul form.

Each timing is the minimum over ``--repeats`` calls of a jitted ``value_and_grad`` w.r.t. input
and kernel (the training-step cost), as wall time and as process CPU time (all threads; the
robust number when other processes share the cores); peak temporary memory is XLA's compiled
estimate. Run:

    .venv/bin/python benchmarks/probes/conv_probe.py                  # 64x64x16, C = 32 and 64
    .venv/bin/python benchmarks/probes/conv_probe.py --shape 32 32 16 --channels 16 --repeats 3
    .venv/bin/python benchmarks/probes/conv_probe.py --unet --shape 32 32 16   # whole UNet step

Results decide ``conv_impl="auto"`` in ``core/models/conv.py``.
"""

from __future__ import annotations

import argparse
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
from diffseg3d.core.models.conv import (
    _conv3d_slices_out,
    _conv3d_slices_sum,
    conv3d_slices,
    conv_lax,
    downsample,
    upsample,
)

CONV_FORMS = {
    "lax3d": conv_lax,
    "slices": conv3d_slices,
    "slices_sum": _conv3d_slices_sum,
    "slices_out": _conv3d_slices_out,
}


def _fwd_bwd(fn):
    def loss(x, k):
        return jnp.sum(fn(x, k) ** 2)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _time_calls(compiled, args, repeats: int) -> tuple[float, float]:
    """(best wall seconds, best process CPU seconds) per call over ``repeats`` calls.

    CPU seconds (all threads) are the robust number on a shared machine: wall time grows with
    other processes' load, the work done does not (much).
    """
    jax.block_until_ready(compiled(*args))  # warm-up
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu


def _temp_mib(compiled) -> float:
    mem = compiled.memory_analysis()
    return getattr(mem, "temp_size_in_bytes", 0) / 2**20 if mem is not None else float("nan")


def _measure(fn, x, k, repeats: int) -> tuple[float, float, float]:
    """(wall s, CPU s) per forward+backward call, and compiled temp memory MiB."""
    compiled = _fwd_bwd(fn).lower(x, k).compile()
    wall, cpu = _time_calls(compiled, (x, k), repeats)
    return wall, cpu, _temp_mib(compiled)


def probe(shape, channels, batch, repeats) -> list[dict]:
    rows = []
    key_x, key_k = jax.random.split(jax.random.PRNGKey(0))
    for c in channels:
        x = jax.random.normal(key_x, (batch, *shape, c))
        k = 0.05 * jax.random.normal(key_k, (3, 3, 3, c, c))
        # forward 2 * N * 27 * C^2 flops; backward (input + kernel grads) twice that.
        flops = 3 * 2 * batch * math.prod(shape) * 27 * c * c
        for name, fn in CONV_FORMS.items():
            sec, cpu, mib = _measure(fn, x, k, repeats)
            rows.append(
                dict(
                    op="conv3",
                    form=name,
                    channels=c,
                    ms=1e3 * sec,
                    cpu_ms=1e3 * cpu,
                    gflops=flops / sec / 1e9,
                    temp_mib=mib,
                )
            )
        kd = 0.05 * jax.random.normal(key_k, (2, 2, 2, c, 2 * c))
        ku = 0.05 * jax.random.normal(key_k, (2, 2, 2, 2 * c, c))
        xd = jax.random.normal(key_x, (batch, *[n // 2 for n in shape], 2 * c))
        for impl, label in (("lax3d", "lax"), ("slices", "matmul")):
            for op, fn, inputs in (
                ("down2", lambda x, k, i=impl: downsample(x, k, i), (x, kd)),
                ("up2", lambda x, k, i=impl: upsample(x, k, i), (xd, ku)),
            ):
                sec, cpu, mib = _measure(fn, *inputs, repeats)
                rows.append(
                    dict(
                        op=op,
                        form=label,
                        channels=c,
                        ms=1e3 * sec,
                        cpu_ms=1e3 * cpu,
                        gflops=float("nan"),
                        temp_mib=mib,
                    )
                )
    return rows


def probe_unet(shape, batch, repeats, num_classes=9, dtype=jnp.float32, impls=None) -> list[dict]:
    """Forward + backward of the paper-size diffusion UNet per ``conv_impl`` (and remat)."""
    from diffseg3d.core.models import UNet

    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.normal(size=(batch, *shape, 1)), jnp.float32)
    x_t = jnp.asarray(rng.uniform(-1, 1, size=(batch, *shape, num_classes)), jnp.float32)
    t = jnp.full((batch,), 0.5)
    rows = []
    impls = impls or (("lax3d", False), ("slices", False), ("slices", True))
    for impl, remat in impls:
        model = UNet(num_classes=num_classes, conv_impl=impl, remat=remat, dtype=dtype)
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), image, x_t, t)
        # NumPy parameters: jax.random in init would add minutes of XLA:CPU compile.
        params = jax.tree.map(
            lambda a: jnp.asarray(0.02 * rng.normal(size=a.shape), jnp.float32), shapes
        )

        def loss(p, model=model):
            return jnp.mean(model.apply(p, image, x_t, t) ** 2)

        compiled = jax.jit(jax.value_and_grad(loss)).lower(params).compile()
        wall, cpu = _time_calls(compiled, (params,), repeats)
        rows.append(
            dict(
                impl=impl,
                remat=remat,
                ms=1e3 * wall,
                cpu_ms=1e3 * cpu,
                temp_mib=_temp_mib(compiled),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[64, 64, 16], help="X Y Z")
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--unet", action="store_true", help="time the paper-size UNet step instead of single convs"
    )
    parser.add_argument(
        "--dtype", choices=["float32", "bfloat16"], default="float32", help="UNet compute dtype"
    )
    parser.add_argument(
        "--impls", nargs="+", default=None, help="UNet forms, e.g. slices lax3d slices:remat"
    )
    args = parser.parse_args()
    if args.unet:
        print(
            f"backend={jax.default_backend()} UNet(32/64/128/256, 2 blocks, 9 classes) "
            f"shape={args.shape} batch={args.batch} dtype={args.dtype}"
        )
        impls = None
        if args.impls:
            impls = [(i.split(":")[0], i.endswith(":remat")) for i in args.impls]
        dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
        for r in probe_unet(tuple(args.shape), args.batch, args.repeats, dtype=dtype, impls=impls):
            print(
                f"unet   {r['impl']:7s} remat={r['remat']!s:5s} {r['ms']:9.1f} ms wall "
                f"{r['cpu_ms']:9.1f} ms CPU {r['temp_mib']:9.1f} temp MiB"
            )
        return
    print(
        f"backend={jax.default_backend()} devices={jax.devices()} shape={args.shape} "
        f"batch={args.batch}"
    )
    print(
        f"{'op':6s} {'form':10s} {'C':>4s} {'wall ms':>9s} {'CPU ms':>9s} {'GFLOP/s':>8s} "
        f"{'temp MiB':>9s}"
    )
    for r in probe(tuple(args.shape), args.channels, args.batch, args.repeats):
        print(
            f"{r['op']:6s} {r['form']:10s} {r['channels']:4d} {r['ms']:9.1f} {r['cpu_ms']:9.1f} "
            f"{r['gflops']:8.1f} {r['temp_mib']:9.1f}"
        )


if __name__ == "__main__":
    main()
