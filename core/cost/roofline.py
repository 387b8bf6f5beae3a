"""The roofline lower bound of a program's time on one device.

A program that does F FLOPs and moves B bytes to and from device memory can run no faster than
``max(F / peak_flops, B / bandwidth)`` on a device with those peaks: each term is what the
device needs if the other were free. Real steps are slower (kernel launches, occupancy, the
cuDNN algorithm, bytes the count leaves out): the bound says what the hardware allows, and a
measured step divided by it says how far from that a program is.
"""

from __future__ import annotations

import math


def roofline_seconds(flops: float, bytes_moved: float, peak_flops: float,
                     bandwidth: float) -> dict[str, float | str]:
    """``{"compute_s", "memory_s", "bound_s", "limit"}``: F / peak, B / bandwidth, their max,
    and which term sets it (``compute`` or ``memory``).

    Args:
      flops: floating-point operations of one run of the program (`flops.hlo_flops`).
      bytes_moved: bytes read and written by its kernels.
      peak_flops: the device's peak FLOP/s for the program's dtype (dense, no sparsity).
      bandwidth: the device's memory bandwidth in bytes/s.
    """
    if peak_flops <= 0 or bandwidth <= 0:
        raise ValueError(f"peak_flops and bandwidth must be > 0, got {peak_flops}, {bandwidth}")
    compute, memory = flops / peak_flops, bytes_moved / bandwidth
    bound = max(compute, memory)
    return {"compute_s": compute, "memory_s": memory, "bound_s": bound,
            "limit": "compute" if compute >= memory else "memory"}


def intensity(flops: float, bytes_moved: float) -> float:
    """Arithmetic intensity in FLOP/byte (inf for a program that moves nothing)."""
    return flops / bytes_moved if bytes_moved else math.inf
