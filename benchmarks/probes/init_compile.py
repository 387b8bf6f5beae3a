"""Compile time of a trial's one-off init program: XLA's default vs `state.INIT_COMPILER_OPTIONS`.

For the quick profile's diffusion U-Net on the phantom's 32x32x16 (or `--shape`), this lowers
`create_train_state` once and compiles it twice, with the backend's default options and with
`INIT_COMPILER_OPTIONS` (what `state.run_init` uses on the CPU), runs both, and checks that the
two states are bit-identical. Each compile is timed as wall time of `lowered.compile(...)`.
Writes `benchmarks/results/init_compile.json` (or `--json`).

    .venv/bin/python -m benchmarks.probes.init_compile
    .venv/bin/python -m benchmarks.probes.init_compile --shape 64 64 16 --channels 8 16 32 64
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import jax
import numpy as np
from diffseg3d.core.models import UNet
from diffseg3d.core.train import create_train_state, make_optimizer
from diffseg3d.core.train.state import INIT_COMPILER_OPTIONS

from benchmarks import RESULTS_DIR
from benchmarks.cpu.machine import load_average, machine_info

RESULTS = RESULTS_DIR / "init_compile.json"


def _timed_compile(lowered, options: dict | None) -> tuple[object, float]:
    start = time.perf_counter()
    compiled = lowered.compile(compiler_options=options)
    return compiled, time.perf_counter() - start


def measure(shape: tuple[int, ...], channels: tuple[int, ...], num_classes: int, batch: int
            ) -> dict:
    """Compile seconds of the init program with default and init options, and bit-identity."""
    model = UNet(num_classes=num_classes, channels=channels, num_res_blocks=1, diffusion=True)
    tx, _ = make_optimizer(3e-3, warmup_steps=20, total_steps=600, weight_decay=1e-4,
                           grad_clip_norm=1.0)
    init = functools.partial(create_train_state, model, tx, image_shape=(batch, *shape, 1),
                             diffusion=True)
    key = jax.random.PRNGKey(0)
    lowered = jax.jit(init).lower(key)
    default, default_s = _timed_compile(lowered, None)
    fast, fast_s = _timed_compile(lowered, INIT_COMPILER_OPTIONS)
    a, b = (jax.tree_util.tree_leaves(c(key)) for c in (default, fast))
    identical = all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b,
                                                                                 strict=True))
    return {"shape": list(shape), "channels": list(channels), "num_classes": num_classes,
            "batch": batch, "backend": jax.default_backend(),
            "init_options": INIT_COMPILER_OPTIONS, "compile_default_s": round(default_s, 2),
            "compile_init_options_s": round(fast_s, 2), "bit_identical": identical}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs="+", default=[32, 32, 16],
                        help="spatial shape (default: the phantom's 32 32 16)")
    parser.add_argument("--channels", type=int, nargs="+", default=[8, 16, 32, 64],
                        help="U-Net channels per level (default: the quick profile's)")
    parser.add_argument("--classes", type=int, default=9, help="mask channels (phantom: 9)")
    parser.add_argument("--batch", type=int, default=2, help="batch of the dummy input")
    parser.add_argument("--json", type=Path, default=RESULTS, help="output file")
    args = parser.parse_args(argv)
    record = measure(tuple(args.shape), tuple(args.channels), args.classes, args.batch)
    record.update(measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  load_average=load_average(), machine=machine_info())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
