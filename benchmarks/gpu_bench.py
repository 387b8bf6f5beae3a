"""`make bench-gpu`: every figure of issue #10 in one command, one process per configuration.

Usage::

    python -m benchmarks.gpu_bench               # on a GPU -> results/gpu_latest.json
    python -m benchmarks.gpu_bench --small       # CPU rehearsal -> results/gpu_small_cpu.json
    python -m benchmarks.gpu_bench --only forward step_b1 --timeout forward=60
    python -m benchmarks.gpu_bench --accum 2 4   # + paper_step_accum2/4 variants
    python -m benchmarks.gpu_bench --record-unmeasured "no GPU in the session of 2026-11-29"

Parts, in run order (the priority under ``--budget-s``): forward, step_b1 (the batch-1 step /
forward ratio at 256x256x48), paper_step (the ``paper`` profile's step, batch 8), monai_plain,
recycling, monai_recycling (MONAI DiffusionModelUNet side by side, same size and batch),
amos_step, monai_amos (192x128x128, 16 classes), hlo (optimized HLO of the batch-1 step,
summarised by ``benchmarks/hlo_summary.py``), sampling (5 steps, one case), test_gpu (the core
tests on the GPU, as ``make test-gpu``), conv_layers (``benchmarks/conv_layers.py``, per-layer
conv timings). Each configuration runs in a fresh process with its own time limit and
``XLA_PYTHON_CLIENT_PREALLOCATE=false``, so its device peak is its own and a hang or an
out-of-memory costs only that configuration; those that cannot start within the budget are
recorded as skipped. The output holds the #10 figures (`benchmarks/gpu/figures.py`), the
targets with pass/fail (None when unmeasured), the versions, and every raw record.

``--small`` shrinks sizes, batch and network (a harness rehearsal on the CPU, minutes); its
output says ``"small": true`` and goes to a different file. Without ``--small`` the command
refuses to run where there is no NVIDIA GPU, and never writes figures measured on a CPU into
``gpu_latest.json``. ``--record-unmeasured REASON`` writes the file with every figure null and
the reason, for a session without a GPU.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.gpu import figures
from benchmarks.gpu.plan import PARTS, plan
from benchmarks.gpu.runner import run_all

RESULTS_DIR = Path(__file__).resolve().parent / "results"
GPU_OUT = RESULTS_DIR / "gpu_latest.json"
SMALL_OUT = RESULTS_DIR / "gpu_small_cpu.json"


def _timeouts(pairs: list[str]) -> dict[str, float]:
    """``["forward=60", "paper_step=300"]`` -> ``{"forward": 60.0, "paper_step": 300.0}``."""
    out = {}
    for pair in pairs:
        name, sep, seconds = pair.partition("=")
        if not sep:
            raise SystemExit(f"--timeout wants NAME=SECONDS, got {pair!r}")
        out[name] = float(seconds)
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true",
                   help="CPU rehearsal: tiny sizes, batch 2, 2-level U-Net; writes "
                        f"{SMALL_OUT.name} with \"small\": true (never GPU figures)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output JSON (default {GPU_OUT.relative_to(RESULTS_DIR.parent.parent)}, "
                        f"with --small {SMALL_OUT.relative_to(RESULTS_DIR.parent.parent)})")
    p.add_argument("--budget-s", type=float, default=480.0,
                   help="wall-clock budget of all configurations in seconds (default 480 = "
                        "#10's 8 minutes); a configuration gets min(its limit, budget left)")
    p.add_argument("--only", nargs="+", default=list(PARTS), choices=PARTS, metavar="PART",
                   help=f"run only these parts (in the fixed order): {', '.join(PARTS)}")
    p.add_argument("--accum", nargs="+", type=int, default=[], metavar="N",
                   help="also measure the profile steps (paper_step, amos_step) with N "
                        "gradient-accumulation microbatches forced (configs paper_step_accumN; "
                        "1 = the whole batch in one pass; sets train.grad_accum_steps)")
    p.add_argument("--monai-batch", type=int, default=1, choices=[1, 2],
                   help="batch of the side-by-side MONAI comparison (one that fits both; "
                        "default 1)")
    p.add_argument("--timeout", action="append", default=[], metavar="NAME=SECONDS",
                   help="time limit of a configuration or a whole part (repeatable), over the "
                        "defaults of benchmarks/gpu/plan.py TIMEOUTS")
    p.add_argument("--min-start-s", type=float, default=20.0,
                   help="do not start a configuration with less budget left (default 20 s: "
                        "importing jax and building the model take that)")
    p.add_argument("--log-dir", type=Path, default=None,
                   help="per-configuration logs and the HLO dump (default: a new folder under "
                        "the system's temp dir, printed)")
    p.add_argument("--record-unmeasured", metavar="REASON", default=None,
                   help="measure nothing: write the output with every figure null and REASON")
    p.add_argument("--list", action="store_true", help="print the configurations and exit")
    return p.parse_args(argv)


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def _has_gpu() -> bool:
    """An NVIDIA driver is there (``nvidia-smi`` on PATH); checked without starting JAX, so the
    parent process never takes device memory from the configurations it runs."""
    return shutil.which("nvidia-smi") is not None


def _cpu_guard(result: dict, small: bool) -> dict:
    """Full mode whose children ran on the CPU: drop every figure, say so (never CPU numbers
    in gpu_latest.json)."""
    backends = {r.get("backend") for r in result["records"] if r.get("backend")}
    if small or not backends or backends - {"cpu"}:
        return result
    cleared = figures.unmeasured_result(
        f"measured on {sorted(backends)}, not a GPU: figures dropped", result["measured_at"])
    return {**cleared, "records": result["records"]}


def run(args: argparse.Namespace) -> dict:
    """Measure ``args``' plan; the result dict written to the output file."""
    configs = plan(tuple(args.only), small=args.small, accum=tuple(args.accum),
                   monai_batch=args.monai_batch, timeouts=_timeouts(args.timeout))
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    print(f"{len(configs)} configurations, budget {args.budget_s:.0f} s, logs in {log_dir}",
          flush=True)
    measured_at, t0 = _utc_now(), time.perf_counter()
    records = run_all(configs, args.budget_s, log_dir, args.min_start_s)
    figs, notes = figures.figures(records)
    figs["bench_wall_s"] = time.perf_counter() - t0
    hlo = next((r["hlo_summary"] for r in records if "hlo_summary" in r), None)
    if hlo is not None:
        from benchmarks.hlo_summary import format_summary

        (log_dir / "hlo_summary.txt").write_text(format_summary(hlo) + "\n")
    result = {
        "device": figures.device(records), "measured_at": measured_at,
        "versions": figures.versions(records), **figs, "figure_notes": notes,
        # Rehearsal figures are not speed figures: no pass/fail for them.
        "targets": None if args.small else figures.targets(figs),
        "small": args.small, "budget_s": args.budget_s, "command": sys.argv,
        **({"note": "CPU rehearsal of the harness (--small): tiny sizes, batch and network; "
                    "not GPU figures, not speed figures"} if args.small else {}),
        "log_dir": str(log_dir), "records": records,
    }
    return _cpu_guard(result, args.small)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    out = args.out or (SMALL_OUT if args.small else GPU_OUT)
    if args.record_unmeasured is not None:
        result = figures.unmeasured_result(args.record_unmeasured, _utc_now())
        _write(result, out)
        return result
    if args.list:
        for cfg in plan(tuple(args.only), small=args.small, accum=tuple(args.accum),
                        monai_batch=args.monai_batch, timeouts=_timeouts(args.timeout)):
            print(f"{cfg.part:<16} {cfg.name:<34} {cfg.kind:<12} limit {cfg.timeout_s:.0f} s")
        return {}
    if not args.small and not _has_gpu():
        raise SystemExit("no NVIDIA GPU here (nvidia-smi not found): use --small for the CPU "
                         "rehearsal, or --record-unmeasured REASON")
    result = run(args)
    _write(result, out)
    shown = {k: result.get(k) for k in (*figures.REQUIRED_KEYS[3:], "bench_wall_s")}
    print(json.dumps(shown, indent=1))
    return result


if __name__ == "__main__":
    main()
