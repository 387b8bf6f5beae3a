"""Side-by-side ratio of two configurations in ONE process, steps interleaved A, B, A, B, ...

On a shared machine the load changes from minute to minute, so two configurations timed minutes
apart in separate processes (as `benchmarks.run` does, for per-config peak RSS) can differ by
2x for reasons that have nothing to do with them. Interleaving puts both under the same load:
round r times one call of A then one of B, and the reported ratio is the median over rounds of
``time_B / time_A``. Use it for levers (B = A with one change) and for ours vs reference.

``python -m benchmarks.cpu.paired A_NAME B_NAME [--rounds 5]`` with names from
``python -m benchmarks.run --list``, or ad hoc ``--size`` variants via ``--a``/``--b`` JSON
overrides, e.g. ``--a '{"size": [32, 32, 16]}' --b '{"size": [32, 32, 16], "dtype":
"bfloat16"}'``. XLA flags apply to the whole process, so flag levers need `benchmarks.run`.
Appends the result to ``benchmarks/results/paired.jsonl``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax

from benchmarks.cpu.configs import BenchConfig, plan
from benchmarks.cpu.machine import load_average
from benchmarks.cpu.workloads import build
from benchmarks.throughput import median_seconds


def paired_ratios(times_a: list[float], times_b: list[float]) -> list[float]:
    """Per-round ``b / a`` (same length lists, one entry per round)."""
    if len(times_a) != len(times_b) or not times_a:
        raise ValueError(f"need equal, non-empty rounds, got {len(times_a)} and {len(times_b)}")
    return [b / a for a, b in zip(times_a, times_b, strict=True)]


def _prepared(cfg: BenchConfig):
    work = build(cfg)
    t0 = time.perf_counter()
    compiled = jax.jit(work.fn, donate_argnums=work.donate_argnums).lower(*work.args).compile()
    return work, compiled, time.perf_counter() - t0


def run_pair(a: BenchConfig, b: BenchConfig, rounds: int, warmup: int = 1) -> dict:
    if a.xla_flags != b.xla_flags:
        raise ValueError("XLA flags are per process: compare flag levers with benchmarks.run")
    load_before = load_average()
    sides = [_prepared(a), _prepared(b)]
    args = [work.args for work, _, _ in sides]
    times: list[list[float]] = [[], []]
    for i in range(warmup + rounds):
        for j, (work, compiled, _) in enumerate(sides):
            t0 = time.perf_counter()
            out = compiled(*args[j])
            jax.block_until_ready(out)
            if i >= warmup:
                times[j].append(time.perf_counter() - t0)
            args[j] = work.advance(out, args[j], i + 1)
    ratios = paired_ratios(times[0], times[1])
    return {
        "a": dataclasses.asdict(a), "b": dataclasses.asdict(b),
        "a_name": a.name, "b_name": b.name,
        "compile_s": [sides[0][2], sides[1][2]],
        "a_step_s": median_seconds(times[0]), "b_step_s": median_seconds(times[1]),
        "b_over_a": median_seconds(ratios), "ratios": ratios,
        "times_a": times[0], "times_b": times[1],
        "load_before": load_before, "load_after": load_average(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _config(name: str | None, override: str | None, default_name: str) -> BenchConfig:
    known = {c.name: c for c in plan()}
    base = known.get(name) if name else BenchConfig(default_name)
    if name and base is None:
        raise SystemExit(f"unknown configuration {name!r}; see python -m benchmarks.run --list")
    if override:
        raw = json.loads(override)
        raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
        base = dataclasses.replace(base, **raw)
    return base


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu.paired", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a_name", nargs="?", help="configuration A (the baseline)")
    p.add_argument("b_name", nargs="?", help="configuration B")
    p.add_argument("--a", help="JSON overrides of A's BenchConfig fields")
    p.add_argument("--b", help="JSON overrides of B's BenchConfig fields")
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (>= 5 for the median)")
    p.add_argument("--emit", action="store_true",
                   help="also print the result as one BENCH_RESULT JSON line (for benchmarks.run)")
    args = p.parse_args(argv)
    a = _config(args.a_name, args.a, "A")
    b = _config(args.b_name, args.b, "B")
    result = run_pair(a, b, args.rounds)
    from benchmarks import RESULTS_DIR

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    with open(RESULTS_DIR / "paired.jsonl", "a") as f:
        f.write(json.dumps(result) + "\n")
    print(f"A {a.name}: {result['a_step_s']:.3f} s   B {b.name}: {result['b_step_s']:.3f} s   "
          f"B/A {result['b_over_a']:.3f} (rounds {[round(r, 3) for r in result['ratios']]}), "
          f"load {result['load_before'][0]} -> {result['load_after'][0]}")
    if args.emit:
        from benchmarks.cpu.measure import RESULT_PREFIX

        print(RESULT_PREFIX + json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
