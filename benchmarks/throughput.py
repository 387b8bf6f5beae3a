"""Arithmetic of a timing: median step time, GFLOP/s, fraction of peak, ratios, and XLA's buffer
plan of a compiled executable in GiB (shared by the CPU suite and the GPU run)."""

from __future__ import annotations

import statistics


def median_seconds(times: list[float]) -> float:
    """Median of the timed steps (robust to one slow step from a neighbour's burst of work)."""
    if not times:
        raise ValueError("no timed steps: need at least one step time")
    return float(statistics.median(times))


def gflops_per_second(flops: float | None, seconds: float) -> float | None:
    """``flops / seconds / 1e9``; None when XLA gave no FLOP count."""
    if flops is None:
        return None
    if seconds <= 0:
        raise ValueError(f"step time must be > 0 s, got {seconds}")
    return flops / seconds / 1e9


def fraction_of_peak(gflops: float | None, peak_gflops: float) -> float | None:
    """Achieved / nominal peak GFLOP/s (e.g. 83.2 / 166.4 = 0.5); None without a FLOP count."""
    if gflops is None:
        return None
    if peak_gflops <= 0:
        raise ValueError(f"peak GFLOP/s must be > 0, got {peak_gflops}")
    return gflops / peak_gflops


def xla_flops(cost_analysis) -> float | None:
    """The ``flops`` entry of ``compiled.cost_analysis()`` (a dict, or a list of one dict in
    older jax); None when the backend reports none."""
    if isinstance(cost_analysis, (list, tuple)):
        cost_analysis = cost_analysis[0] if cost_analysis else None
    if not cost_analysis:
        return None
    flops = cost_analysis.get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, None when either is missing (a configuration failed)."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def xla_memory_gib(compiled) -> dict:
    """XLA's buffer plan of the executable in GiB: ``temp`` (activations and scratch),
    ``args``/``outputs`` and ``alias`` (donated buffers reused for outputs); their
    ``args + outputs - alias + temp`` bounds the step's device memory without running it."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {}
    gib = {
        "temp": stats.temp_size_in_bytes, "args": stats.argument_size_in_bytes,
        "outputs": stats.output_size_in_bytes, "alias": stats.alias_size_in_bytes,
    }
    gib = {k: v / 2**30 for k, v in gib.items()}
    gib["planned_peak"] = gib["args"] + gib["outputs"] - gib["alias"] + gib["temp"]
    return gib
