"""What the benchmarks ran on, and the CPU's nominal fp32 peak that "fraction of peak" divides by.

Peak = cores x clock x fp32 FLOP per cycle per core. The constants are those of the development
machine: an Intel Xeon (Sapphire Rapids class, KVM guest) at a nominal 2.6 GHz
(``BogoMIPS / 2`` = 5200 / 2), with AVX-512: 16 fp32 lanes x 2 FLOP per fused multiply-add,
counted for one FMA port = 32 FLOP per cycle. Two cores give 2 x 2.6e9 x 32 = 166.4 GFLOP/s.
The core count is read from ``os.cpu_count()`` so the figure follows the machine; the clock and
FLOP/cycle are constants (the guest cannot read the turbo clock or the port count).
"""

from __future__ import annotations

import os
import platform
import time

#: Nominal core clock of the development machine in Hz (``BogoMIPS / 2`` in /proc/cpuinfo).
CPU_CLOCK_HZ = 2.6e9

#: fp32 FLOP per cycle per core: AVX-512 (16 fp32 lanes) x FMA (2 FLOP), one FMA port.
FP32_FLOP_PER_CYCLE = 32


def cpu_peak_flops(cores: int, clock_hz: float = CPU_CLOCK_HZ,
                   flop_per_cycle: int = FP32_FLOP_PER_CYCLE) -> float:
    """Nominal fp32 peak in FLOP/s: ``cores * clock_hz * flop_per_cycle``."""
    if cores < 1 or clock_hz <= 0 or flop_per_cycle < 1:
        raise ValueError(
            f"need cores >= 1, clock_hz > 0, flop_per_cycle >= 1; got {cores}, {clock_hz}, "
            f"{flop_per_cycle}"
        )
    return float(cores) * clock_hz * flop_per_cycle


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (or ``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages: > 0 on an idle 2-core box means the timings are noisy."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict:
    """Machine record for ``latest.json``: cpu model, cores, peak, jax/flax versions, XLA flags."""
    import flax
    import jax

    cores = os.cpu_count() or 1
    return {
        "cpu_model": cpu_model(),
        "cores": cores,
        "cpu_clock_hz": CPU_CLOCK_HZ,
        "fp32_flop_per_cycle": FP32_FLOP_PER_CYCLE,
        "cpu_peak_gflops": cpu_peak_flops(cores) / 1e9,
        "python": platform.python_version(),
        "jax": jax.__version__,
        "flax": flax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "load_average": load_average(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
