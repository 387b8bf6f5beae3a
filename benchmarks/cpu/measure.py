"""Time one `BenchConfig` in this process and print its record as one JSON line.

Run by `benchmarks.run` as ``python -m benchmarks.cpu.measure '<config json>'``, one fresh process
per configuration, so ``ru_maxrss`` (peak resident memory of *this* process) belongs to this
configuration alone. The record:

- ``compile_s``: wall time of ``jit(fn).lower(*args).compile()``;
- ``step_s``: median of ``cfg.steps`` calls after ``cfg.warmup`` untimed ones, each ended by
  ``jax.block_until_ready``; ``step_s_all`` every timed call;
- ``flops``: XLA's cost analysis of the compiled executable; ``gflops`` = flops / step_s;
  ``fraction_of_peak`` = gflops / the CPU's nominal fp32 peak (``machine.py``);
- ``peak_rss_gib``: ``ru_maxrss`` (KiB on Linux) / 2**20 at the end, compile included;
- ``xla_memory_gib``: XLA's buffer plan (``compiled.memory_analysis()``), see
  ``xla_memory_gib``;
- a CPU step whose planned peak exceeds 90 % of ``MemAvailable`` is not run (status
  ``skipped``, the plan recorded instead of ``step_s``);
- ``device_peak_gib``: ``device.memory_stats()["peak_bytes_in_use"]`` where the backend has it
  (GPU); None on CPU;
- ``load_before`` / ``load_after``: ``os.getloadavg()``, to judge how noisy the numbers are.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import sys
import time

import jax

from benchmarks.cpu.configs import BenchConfig
from benchmarks.cpu.machine import cpu_peak_flops, load_average
from benchmarks.cpu.workloads import build
from benchmarks.throughput import (
    fraction_of_peak,
    gflops_per_second,
    median_seconds,
    xla_flops,
    xla_memory_gib,
)

RESULT_PREFIX = "BENCH_RESULT "


def peak_rss_gib() -> float:
    """Peak resident set size of this process in GiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def device_peak_gib() -> float | None:
    """Peak device memory in GiB on backends that track it (GPU/TPU); None on CPU."""
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / 2**30


def available_memory_gib() -> float | None:
    """``MemAvailable`` of /proc/meminfo in GiB (None where there is no /proc)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


#: Run a step only if XLA's planned peak fits in this fraction of the available host memory:
#: an out-of-memory kill on a shared machine can take a neighbour's process with it.
MEMORY_SAFETY_FRACTION = 0.9


def measure(cfg: BenchConfig) -> dict:
    load_before = load_average()
    work = build(cfg)
    jitted = jax.jit(work.fn, donate_argnums=work.donate_argnums)
    t0 = time.perf_counter()
    compiled = jitted.lower(*work.args).compile()
    compile_s = time.perf_counter() - t0
    flops = xla_flops(compiled.cost_analysis())
    memory_plan = xla_memory_gib(compiled)
    available = available_memory_gib()
    if (jax.default_backend() == "cpu" and available is not None and memory_plan
            and memory_plan["planned_peak"] > MEMORY_SAFETY_FRACTION * available):
        return {
            **dataclasses.asdict(cfg), "status": "skipped",
            "error": f"XLA plans {memory_plan['planned_peak']:.1f} GiB for this step, more than "
                     f"{MEMORY_SAFETY_FRACTION:.0%} of the {available:.1f} GiB available",
            "compile_s": compile_s, "flops": flops, "xla_memory_gib": memory_plan,
            "peak_rss_gib": peak_rss_gib(), "load_before": load_before,
        }

    args = work.args
    times = []
    for i in range(cfg.warmup + cfg.steps):
        t0 = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        if i >= cfg.warmup:
            times.append(time.perf_counter() - t0)
        args = work.advance(out, args, i + 1)

    step_s = median_seconds(times)
    gflops = gflops_per_second(flops, step_s)
    peak = cpu_peak_flops(os.cpu_count() or 1) / 1e9 if jax.default_backend() == "cpu" else None
    return {
        **dataclasses.asdict(cfg),
        "status": "ok",
        "backend": jax.default_backend(),
        "compile_s": compile_s,
        "step_s": step_s,
        "step_s_all": times,
        "flops": flops,
        "gflops": gflops,
        "fraction_of_peak": fraction_of_peak(gflops, peak) if peak else None,
        "peak_rss_gib": peak_rss_gib(),
        "device_peak_gib": device_peak_gib(),
        "xla_memory_gib": memory_plan,
        "load_before": load_before,
        "load_after": load_average(),
    }


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m benchmarks.cpu.measure '<BenchConfig json>'")
    import json

    record = measure(BenchConfig.from_json(argv[0]))
    print(RESULT_PREFIX + json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
