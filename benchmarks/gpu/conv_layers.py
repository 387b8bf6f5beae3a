"""Per-layer forward and backward timings of every conv of the paper U-Net, per conv form.

For each level ``l`` of the U-Net (channels 32/64/128/256 by default, spatial size
``256x256x48 / 2**l``, every dim halved per level), each distinct conv layer shape:

========== ================================ ======================== ===========================
kind       input                            kernel                   where in ``unet.UNet``
========== ================================ ======================== ===========================
stem       ``(B, *S_0, 1 + classes)``       3x3x3, -> ``c_0``        ``stem`` (image + x_t)
conv3      ``(B, *S_l, c_l)``               3x3x3, ``c_l -> c_l``    residual blocks
conv3_cat  ``(B, *S_l, 2 c_l)``             3x3x3, ``2 c_l -> c_l``  first decoder block (skip)
down       ``(B, *S_l, c_l)``               2x2x2 s2, -> ``c_l+1``   ``down{l}_downsample``
up         ``(B, *S_l+1, c_l+1)``           2x2x2 s2^T, -> ``c_l``   ``up{l}_upsample``
========== ================================ ======================== ===========================

is timed in each ``--impl`` form (``core/models/conv.py``: ``slices``, ``lax3d``,
``lax3d_s2d``; all run on every backend) as

- ``fwd_s``: the conv alone (jitted), minimum wall time over ``--repeats`` calls after one
  warm-up call;
- ``fwd_bwd_s``: ``value_and_grad`` of ``sum(conv(x, k) * w)`` (``w`` a fixed cotangent) w.r.t.
  input and kernel: forward, input gradient and kernel gradient, as in a training step;
- ``bwd_over_fwd = (fwd_bwd_s - fwd_s) / fwd_s``: the backward pass in forward passes (about 2
  for a conv; noise can make it anything for microsecond layers);
- ``compile_s`` / ``temp_bytes``: compile time and XLA's compiled temporary-memory estimate
  (``compiled.memory_analysis()``) of the forward+backward function (``fwd_compile_s`` /
  ``fwd_temp_bytes`` of the forward).

Where two forms compute a layer with the same ops (the 3x3x3 convs of ``lax3d`` and
``lax3d_s2d``; the down/up convs of ``slices`` and ``lax3d_s2d``), it is measured once and the
record of the other form repeats it (``form`` names the ops, ``measured_as`` the form timed).
Forms are measured in the ``--impl`` order (default ``lax3d``, ``lax3d_s2d``, ``slices``), and
``--json`` is rewritten after each measurement, so a run cut short keeps what it measured.
``count`` is how many layers of that shape one U-Net pass has (with ``--res-blocks``), so
``sum(count * fwd_bwd_s)`` estimates the convs' share of a step.

    python -m benchmarks.gpu.conv_layers --json conv_layers.json            # paper size, bf16
    python -m benchmarks.gpu.conv_layers --small --json /tmp/c.json         # tiny, seconds on CPU
    python -m benchmarks.gpu.conv_layers --impl lax3d lax3d_s2d --dtype float32 --batch 2
    python -m benchmarks.gpu.conv_layers --kinds down up --levels 0 1 2   # the down/up rows

Output: a table on stdout; ``--json PATH``: a list of records with keys :data:`RECORD_KEYS`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from diffseg3d.core.models.conv import CONCRETE_CONV_IMPLS, conv_same, downsample, upsample

#: Paper size (prostate MR) and the ``--small`` one (divisible by 8 for four levels).
FULL = {"shape": (256, 256, 48), "channels": (32, 64, 128, 256), "classes": 9, "repeats": 5}
SMALL = {"shape": (16, 16, 8), "channels": (4, 8, 16, 32), "classes": 2, "repeats": 2}

#: Measured first, so that a run cut short has the accelerator candidates.
DEFAULT_IMPLS = ("lax3d", "lax3d_s2d", "slices")
KINDS = ("stem", "conv3", "conv3_cat", "down", "up")
RECORD_KEYS = (
    "level", "kind", "impl", "form", "measured_as", "dtype", "shape", "kernel_shape",
    "out_shape", "count", "fwd_s", "fwd_bwd_s", "bwd_over_fwd", "compile_s", "temp_bytes",
    "fwd_compile_s", "fwd_temp_bytes", "backend", "device",
)


def unet_conv_layers(
    shape: tuple[int, ...], channels: tuple[int, ...], classes: int, batch: int = 1,
    res_blocks: int = 2,
) -> list[dict]:
    """The distinct conv layers of ``UNet(num_classes=classes, channels=channels,
    num_res_blocks=res_blocks)`` (diffusion) on ``(batch, *shape)`` volumes.

    Returns dicts ``level, kind, shape (input), kernel_shape, out_shape, count`` (layers of that
    shape in one pass), in level order. Spatial size at level ``l`` is ``shape // 2**l``.
    """
    levels = len(channels)
    if any(n % 2 ** (levels - 1) for n in shape):
        raise ValueError(f"every size of {shape} must divide by 2**{levels - 1}")
    spatial = [tuple(n // 2**lv for n in shape) for lv in range(levels)]

    def layer(level, kind, s_in, cin, k, cout, s_out, count):
        return {"level": level, "kind": kind, "shape": [batch, *s_in, cin],
                "kernel_shape": [k] * len(shape) + [cin, cout],
                "out_shape": [batch, *s_out, cout], "count": count}

    layers = [layer(0, "stem", spatial[0], 1 + classes, 3, channels[0], spatial[0], 1)]
    for lv, c in enumerate(channels):
        s = spatial[lv]
        bottom = lv == levels - 1
        # Encoder: 2 convs per block; decoder: the first block's conv1 takes the concatenation.
        conv3_count = 2 * res_blocks + (0 if bottom else 2 * res_blocks - 1)
        layers.append(layer(lv, "conv3", s, c, 3, c, s, conv3_count))
        if bottom:
            continue
        c_next, s_next = channels[lv + 1], spatial[lv + 1]
        layers.append(layer(lv, "conv3_cat", s, 2 * c, 3, c, s, 1))
        layers.append(layer(lv, "down", s, c, 2, c_next, s_next, 1))
        layers.append(layer(lv, "up", s_next, c_next, 2, c, s, 1))
    return layers


def _form(kind: str, impl: str) -> str:
    """The ops a form computes a layer kind with (two forms with the same ops share timings)."""
    if kind in ("down", "up"):
        if impl == "lax3d":
            return "lax_strided_conv" if kind == "down" else "lax_conv_transpose"
        return "space_to_depth_matmul" if kind == "down" else "depth_to_space_matmul"
    return "slices" if impl == "slices" else "lax_conv"


def _layer_fn(kind: str, impl: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """``(x, kernel) -> y`` of the layer (no bias: an elementwise add, not the conv's cost)."""
    if kind == "down":
        return lambda x, k: downsample(x, k, impl)
    if kind == "up":
        return lambda x, k: upsample(x, k, impl)
    return lambda x, k: conv_same(x, k, impl)


def _filled(shape: list[int], dtype, seed: int, scale: float = 1.0) -> jax.Array:
    """Normal-looking values of ``shape`` without generating them all: a 4099-value random
    block tiled (timings do not depend on the values; paper-size tensors have 10^8 of them)."""
    block = np.random.default_rng(seed).standard_normal(4099).astype(np.float32)
    return jnp.asarray(scale * np.resize(block, math.prod(shape)).reshape(shape), dtype)


def _compile(fn: Callable, args: tuple) -> tuple[object, float]:
    """(compiled executable, seconds to lower and compile)."""
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    return compiled, time.perf_counter() - start


def _temp_bytes(compiled) -> int | None:
    """XLA's compiled temporary-buffer estimate in bytes (None where the backend gives none)."""
    mem = compiled.memory_analysis()
    return None if mem is None else int(getattr(mem, "temp_size_in_bytes", 0))


def _min_wall_s(compiled, args: tuple, repeats: int) -> float:
    """Fastest of ``repeats`` calls (wall seconds, to completion) after one warm-up call."""
    jax.block_until_ready(compiled(*args))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        best = min(best, time.perf_counter() - start)
    return best


def measure_layer(layer: dict, impl: str, dtype, repeats: int) -> dict:
    """Timings and compiled memory of one layer in form ``impl`` (keys as :data:`RECORD_KEYS`
    without the layer's own)."""
    fn = _layer_fn(layer["kind"], impl)
    x = _filled(layer["shape"], dtype, seed=0)
    k = _filled(layer["kernel_shape"], dtype, seed=1, scale=0.05)
    w = _filled(layer["out_shape"], dtype, seed=2)

    def loss(x, k):
        return jnp.sum(fn(x, k) * w, dtype=jnp.float32)

    fwd, fwd_compile_s = _compile(fn, (x, k))
    fwd_bwd, compile_s = _compile(jax.value_and_grad(loss, argnums=(0, 1)), (x, k))
    fwd_s = _min_wall_s(fwd, (x, k), repeats)
    fwd_bwd_s = _min_wall_s(fwd_bwd, (x, k), repeats)
    return {
        "fwd_s": fwd_s, "fwd_bwd_s": fwd_bwd_s, "bwd_over_fwd": (fwd_bwd_s - fwd_s) / fwd_s,
        "compile_s": compile_s, "temp_bytes": _temp_bytes(fwd_bwd),
        "fwd_compile_s": fwd_compile_s, "fwd_temp_bytes": _temp_bytes(fwd),
    }


def run(layers: list[dict], impls: tuple[str, ...], dtype_name: str, repeats: int,
        json_path: str | None = None, budget_s: float | None = None) -> list[dict]:
    """Records of every ``(layer, impl)``, each layer form measured once (see module doc).

    ``budget_s``: start no new measurement after that many seconds (the records not measured
    are left out). ``json_path`` is rewritten after every measurement.
    """
    dtype = jnp.dtype(dtype_name)
    device = jax.devices()[0]
    measured: dict[tuple[int, str, str], tuple[str, dict]] = {}
    records = []
    start = time.perf_counter()
    for impl in impls:
        for layer in layers:
            form = _form(layer["kind"], impl)
            key = (layer["level"], layer["kind"], form)
            if key not in measured:
                if budget_s is not None and time.perf_counter() - start > budget_s:
                    print(f"budget {budget_s} s spent: skipped {impl} {layer['kind']} "
                          f"level {layer['level']}", flush=True)
                    continue
                measured[key] = (impl, measure_layer(layer, impl, dtype, repeats))
            measured_as, timing = measured[key]
            records.append({
                **layer, "impl": impl, "form": form, "measured_as": measured_as,
                "dtype": dtype_name, **timing, "backend": jax.default_backend(),
                "device": device.device_kind,
            })
            if json_path:
                _write_json(records, json_path)
    return records


def _write_json(records: list[dict], path: str) -> None:
    """Write ``records`` to ``path`` via a temporary file, so a reader never sees half a list."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(records, f, indent=1)
    os.replace(tmp, path)


def format_table(records: list[dict]) -> str:
    """One line per record, ordered by level, kind and form."""
    rows = sorted(records, key=lambda r: (r["level"], KINDS.index(r["kind"]), r["impl"]))
    head = (f"{'lvl':>3s} {'kind':9s} {'impl':9s} {'form':21s} {'input':>22s} {'n':>2s} "
            f"{'fwd ms':>9s} {'fwd+bwd ms':>10s} {'bwd/fwd':>7s} {'compile s':>9s} "
            f"{'temp MiB':>9s}")
    lines = [head]
    for r in rows:
        temp = "n/a" if r["temp_bytes"] is None else f"{r['temp_bytes'] / 2**20:.1f}"
        lines.append(
            f"{r['level']:3d} {r['kind']:9s} {r['impl']:9s} {r['form']:21s} "
            f"{'x'.join(map(str, r['shape'])):>22s} {r['count']:2d} {1e3 * r['fwd_s']:9.3f} "
            f"{1e3 * r['fwd_bwd_s']:10.3f} {r['bwd_over_fwd']:7.2f} {r['compile_s']:9.2f} "
            f"{temp:>9s}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true",
                        help=f"tiny sizes (default {SMALL}), seconds on a CPU")
    parser.add_argument("--shape", type=int, nargs=3, default=None, help="X Y Z at level 0")
    parser.add_argument("--channels", type=int, nargs="+", default=None)
    parser.add_argument("--classes", type=int, default=None, help="stem input: 1 + classes")
    parser.add_argument("--res-blocks", type=int, default=2, help="for the layer counts")
    parser.add_argument("--impl", nargs="+", choices=CONCRETE_CONV_IMPLS, default=DEFAULT_IMPLS)
    parser.add_argument("--dtype", choices=("bfloat16", "float32"), default="bfloat16")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--budget-s", type=float, default=None,
                        help="start no new measurement after this many seconds")
    parser.add_argument("--json", default=None, help="write the records here (a JSON list)")
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=None,
                        help="only these layer kinds (e.g. down up)")
    parser.add_argument("--levels", type=int, nargs="+", default=None,
                        help="only these U-Net levels (0 = full resolution)")
    args = parser.parse_args(argv)
    sizes = SMALL if args.small else FULL
    shape = tuple(args.shape or sizes["shape"])
    channels = tuple(args.channels or sizes["channels"])
    classes = args.classes or sizes["classes"]
    repeats = args.repeats or sizes["repeats"]
    layers = [lay for lay in unet_conv_layers(shape, channels, classes, args.batch,
                                              args.res_blocks)
              if (args.kinds is None or lay["kind"] in args.kinds)
              and (args.levels is None or lay["level"] in args.levels)]
    print(f"backend={jax.default_backend()} device={jax.devices()[0].device_kind} "
          f"shape={shape} channels={channels} classes={classes} batch={args.batch} "
          f"dtype={args.dtype} repeats={repeats} impls={tuple(args.impl)}", flush=True)
    records = run(layers, tuple(dict.fromkeys(args.impl)), args.dtype, repeats, args.json,
                  args.budget_s)
    print(format_table(records))
    return records


if __name__ == "__main__":
    main()
