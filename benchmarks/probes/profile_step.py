"""Where a training step's time goes: a `jax.profiler` trace of one step, summed per XLA op.

``python -m benchmarks.probes.profile_step [--size 96 96 32] [--name NAME] [config overrides]``
compiles a training step (default: our plain diffusion step at 96x96x32, the 50 %-of-peak target's
configuration), runs one warm-up step, traces one step and writes
``benchmarks/results/profile_<name>.json``:

- ``by_category``: seconds and share per op category (``convolution``, ``fusion`` = XLA's fused
  elementwise/reduction kernels such as GroupNorm and SiLU, ``dot``, ``copy``/``transpose``, ...),
  from the executor events of the trace (each event is one HLO instruction, named as in
  ``compiled.as_text()``);
- ``top_ops``: the 25 most expensive instructions with their HLO opcode;
- ``conv_flops`` / ``conv_gflops``: FLOPs of the convolution instructions (2 x output elements
  x kernel window x input features / groups, parsed from the HLO) and the rate they ran at.

The trace's per-thread events are summed, so on a multi-threaded op the seconds are the wall
time of the thunk on the executor thread (Eigen's worker threads record no op events).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import re
import tempfile
import time

import jax
from diffseg3d.core.cost.flops import conv_flops
from diffseg3d.core.cost.hlo_text import HloModule

from benchmarks.cpu.configs import BenchConfig, size_tag
from benchmarks.cpu.workloads import build

SKIP_PREFIXES = ("ThreadpoolListener", "ThunkExecutor", "end: ", "$")

_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\S+)\s+(\w[\w\-]*)\(")


def hlo_opcodes(hlo_text: str) -> dict[str, str]:
    """Instruction name -> opcode (``convolution``, ``fusion``, ...) from HLO text."""
    out = {}
    for line in hlo_text.splitlines():
        m = _INSTR.match(line)
        if m:
            out[m.group(1)] = m.group(3)
    return out


_COMPUTATION = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def _instructions(hlo_text: str):
    """Yield ``(computation, instruction name, opcode, called computation or None)`` for every
    instruction of HLO text; the called computation is given for ``fusion`` instructions."""
    current = None
    for line in hlo_text.splitlines():
        m = _COMPUTATION.match(line)
        if m and "=" not in line.split("{")[0]:
            current = m.group(1)
            continue
        m = _INSTR.match(line)
        if m and current is not None:
            c = _CALLS.search(line) if m.group(3) == "fusion" else None
            yield current, m.group(1), m.group(3), (c.group(1) if c else None)


def op_categories(hlo_text: str) -> dict[str, str]:
    """Instruction name -> category. A fusion is named by what it computes: ``conv fusion``
    (its computation holds a convolution; on XLA:CPU these are the YNNPACK/oneDNN kernels),
    ``dot fusion``, ``scatter fusion``, else ``elementwise/reduce fusion`` (GroupNorm, SiLU,
    adds, optimizer update); other instructions keep their opcode."""
    comp_ops: dict[str, set[str]] = collections.defaultdict(set)
    calls: dict[str, str] = {}
    for current, name, opcode, called in _instructions(hlo_text):
        comp_ops[current].add(opcode)
        if called is not None:
            calls[name] = called
    out = {}
    for name, opcode in hlo_opcodes(hlo_text).items():
        if opcode != "fusion":
            out[name] = opcode
            continue
        inner = comp_ops.get(calls.get(name, ""), set())
        for op, cat in (("convolution", "conv fusion"), ("dot", "dot fusion"),
                        ("scatter", "scatter fusion")):
            if op in inner:
                out[name] = cat
                break
        else:
            out[name] = "elementwise/reduce fusion"
    return out


def fusion_conv_flops(hlo_text: str) -> dict[str, float]:
    """Top-level instruction name -> FLOPs of the convolutions it runs (itself or inside the
    fused computation it calls)."""
    per_conv = conv_flops_from_hlo(hlo_text)
    owner: dict[str, str] = {}
    comp_convs: dict[str, float] = collections.defaultdict(float)
    for current, name, _, called in _instructions(hlo_text):
        if name in per_conv:
            comp_convs[current] += per_conv[name]
        if called is not None:
            owner[name] = called
    out = {name: f for name, f in per_conv.items()}
    for name, comp in owner.items():
        if comp_convs.get(comp):
            out[name] = comp_convs[comp]
    return out


def conv_flops_from_hlo(hlo_text: str) -> dict[str, float]:
    """FLOPs of each ``convolution`` instruction in HLO text, by name: the count of
    `diffseg3d.core.cost.flops.conv_flops` (2 FLOPs per input feature, output feature and
    window tap that lands on the input)."""
    module = HloModule(hlo_text)
    return {row.name: conv_flops(module, row) for row in module.rows if row.op == "convolution"}


def op_seconds(xplane_path: str) -> dict[str, float]:
    """Seconds per HLO instruction name, summed over all events of the trace's CPU plane."""
    data = jax.profiler.ProfileData.from_file(xplane_path)
    totals: dict[str, float] = collections.defaultdict(float)
    for plane in data.planes:
        for line in plane.lines:
            if line.name == "python":
                continue
            for event in line.events:
                if event.name.startswith(SKIP_PREFIXES):
                    continue
                totals[event.name] += event.duration_ns / 1e9
    return dict(totals)


def profile(cfg: BenchConfig) -> dict:
    work = build(cfg)
    compiled = jax.jit(work.fn, donate_argnums=work.donate_argnums).lower(*work.args).compile()
    hlo = compiled.as_text()
    opcodes = op_categories(hlo)
    conv_flops = fusion_conv_flops(hlo)
    args = work.args
    out = compiled(*args)
    jax.block_until_ready(out)
    args = work.advance(out, args, 1)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        with jax.profiler.trace(tmp):
            out = compiled(*args)
            jax.block_until_ready(out)
        traced_s = time.perf_counter() - t0
        seconds = op_seconds(sorted(glob.glob(f"{tmp}/**/*.xplane.pb", recursive=True))[-1])
    by_cat: dict[str, float] = collections.defaultdict(float)
    for name, s in seconds.items():
        by_cat[opcodes.get(name, "other")] += s
    total = sum(seconds.values())
    conv_s = sum(s for n, s in seconds.items() if n in conv_flops)
    conv_total_flops = sum(f for n, f in conv_flops.items() if n in seconds)
    top = sorted(seconds.items(), key=lambda kv: -kv[1])[:25]
    return {
        "config": json.loads(cfg.to_json()),
        "traced_step_s": traced_s,
        "op_seconds_total": total,
        "by_category": {k: {"s": v, "share": v / total}
                        for k, v in sorted(by_cat.items(), key=lambda kv: -kv[1])},
        "conv_flops": conv_total_flops,
        "conv_gflops": conv_total_flops / conv_s / 1e9 if conv_s else None,
        "xla_flops": (compiled.cost_analysis() or {}).get("flops"),
        "top_ops": [{"name": n, "opcode": opcodes.get(n, "?"), "s": s,
                     "gflops": conv_flops[n] / s / 1e9 if n in conv_flops and s else None}
                    for n, s in top],
        "conv_seconds": conv_s,
        "op_seconds": seconds,
        "load_average": list(__import__("os").getloadavg()),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.probes.profile_step",
                                description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, nargs=3, default=[96, 96, 32])
    p.add_argument("--conv-impl", default="auto", choices=["auto", "slices", "lax3d", "lax3d_s2d"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--model", default="ours", choices=["ours", "reference"])
    p.add_argument("--recycling", action="store_true")
    args = p.parse_args(argv)
    size = tuple(args.size)
    step = "recycling_" if args.recycling else ""
    cfg = BenchConfig(f"profile_{args.model}_{args.conv_impl}_{args.dtype}_{step}{size_tag(size)}",
                      size=size, conv_impl=args.conv_impl, dtype=args.dtype, model=args.model,
                      recycling=args.recycling)
    result = profile(cfg)
    from benchmarks import RESULTS_DIR

    out = RESULTS_DIR / f"{cfg.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"step (traced) {result['traced_step_s']:.2f} s; op time {result['op_seconds_total']:.2f}"
          f" s; conv {result['conv_gflops'] or 0:.1f} GFLOP/s")
    for cat, v in result["by_category"].items():
        print(f"  {cat:<20} {v['s']:8.3f} s  {v['share']:6.1%}")
    for op in result["top_ops"][:12]:
        rate = f"{op['gflops']:.1f} GFLOP/s" if op["gflops"] else ""
        print(f"  {op['name']:<40} {op['opcode']:<14} {op['s']:.3f} s {rate}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
