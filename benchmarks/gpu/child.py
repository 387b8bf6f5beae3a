"""One configuration, measured in this process: ``python -m benchmarks.gpu.child '<json>'``.

Started by `benchmarks.gpu.runner`, one fresh process per `GpuConfig`, so the device peak
(``peak_bytes_in_use``) and an out-of-memory or a hang belong to that configuration alone. The
record is printed as one ``BENCH_RESULT {json}`` line (the prefix of ``benchmarks.cpu.measure``).
The MONAI configurations never import jax, so JAX holds no device memory beside torch's.
"""

from __future__ import annotations

import json
import sys

from benchmarks.gpu.plan import GpuConfig

RESULT_PREFIX = "BENCH_RESULT "


def _jax_measure(cfg: GpuConfig) -> dict:
    from benchmarks.gpu import jax_steps

    measure = {
        "step": jax_steps.measure_step,
        "profile_step": jax_steps.measure_profile_step,
        "sample": jax_steps.measure_sample,
        "hlo": jax_steps.compile_for_hlo,
    }[cfg.kind]
    return {**jax_steps.device_info(), **measure(cfg)}


def measure(cfg: GpuConfig) -> dict:
    """The record of ``cfg`` (kind ``monai`` in torch, the others in jax)."""
    if cfg.kind == "monai":
        try:
            from benchmarks.gpu.monai_step import measure_monai

            return measure_monai(cfg)
        except ImportError as err:  # monai/torch (or monai's optional einops) not installed
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            return {"status": "skipped", "error": f"MONAI not importable: {first}"[:300]}
    return _jax_measure(cfg)


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m benchmarks.gpu.child '<GpuConfig json>'")
    record = measure(GpuConfig.from_json(argv[0]))
    print(RESULT_PREFIX + json.dumps(record), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
