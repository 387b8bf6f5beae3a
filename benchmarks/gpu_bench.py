"""`make bench-gpu`: the GPU run in one command, one process per configuration.

Usage::

    python -m benchmarks.gpu_bench               # on a GPU -> results/gpu_latest.json
    python -m benchmarks.gpu_bench --small       # CPU rehearsal -> results/gpu_small_cpu.json
    python -m benchmarks.gpu_bench --list        # the plan and its estimated GPU time
    python -m benchmarks.gpu_bench --only step_b1 hlo --timeout step_b1=150
    python -m benchmarks.gpu_bench --accum 2 4   # + paper_step_accum2/4 variants
    python -m benchmarks.gpu_bench --record-unmeasured "not measured on a GPU"

Parts, in run order, ordered by what they decide (`benchmarks/gpu/plan.py`): step_b1 (the
batch-1 step at 256x256x48 in ``lax3d_s2d``, the form ``conv_impl: auto`` picks on a GPU, with
one forward pass, then in ``lax3d``), hlo (the HLO summary of both steps: flagged convs),
conv_updown (per-layer timings of the down/up convs of the top three levels, both forms),
paper_step (the ``paper`` profile's accumulated batch-8 step), monai_paper (MONAI's
``DiffusionModelUNet`` at the same batch), then while time remains: monai_plain, recycling,
monai_recycling, sampling, amos_step, monai_amos, conv_layers (every conv layer), test_gpu (the
core tests on the GPU, as ``make test-gpu``). The plan prints its estimated GPU time first; the
default budget is 6 minutes (``--budget-s``): a configuration gets min(its limit, budget left),
and those that cannot start are recorded as skipped.

Each configuration runs in a fresh process with ``XLA_PYTHON_CLIENT_PREALLOCATE=false``, so its
device peak is its own and a hang or an out-of-memory costs only that configuration. The
processes share one persistent compilation cache (``--cache-dir``: a rerun loads instead of
compiling, so its compile times are cache loads; ``--no-cache`` for cold compiles), take up to
95 % of the device memory (``XLA_CLIENT_MEM_FRACTION``), and XLA dumps its autotune results to
``--autotune-dir`` (default ``benchmarks/results/gpu_autotune/``). The output holds the
figures (`benchmarks/gpu/figures.py`), the targets with pass/fail (None when unmeasured), the
versions (jaxlib, the CUDA plugin, CUDA, cuDNN, the driver), the plan's estimate and every raw
record; the HLO summaries go to ``<log dir>/hlo_summary.txt``.

``--small`` shrinks sizes, batch and network (a harness rehearsal on the CPU, minutes; budget
13 minutes, so that ``timeout 900`` around it leaves time to write the output); its output
says ``"small": true`` and goes to a different file. Without ``--small`` the command refuses
to run where there is no NVIDIA GPU, and never writes figures measured on a CPU into
``gpu_latest.json``. ``--record-unmeasured REASON`` writes the file with every figure null
and the reason.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import RESULTS_DIR
from benchmarks.gpu import figures
from benchmarks.gpu.plan import (
    BUDGET_S,
    PARTS,
    SMALL_BUDGET_S,
    estimate,
    format_estimate,
    plan,
)
from benchmarks.gpu.plan_reference import with_plan
from benchmarks.gpu.runner import run_all, run_config, shared_env

GPU_OUT = RESULTS_DIR / "gpu_latest.json"
SMALL_OUT = RESULTS_DIR / "gpu_small_cpu.json"
AUTOTUNE_DIR = RESULTS_DIR / "gpu_autotune"
CACHE_ROOT = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diffseg3d"


def _timeouts(pairs: list[str]) -> dict[str, float]:
    """``["step_b1=150", "paper_step=300"]`` -> ``{"step_b1": 150.0, "paper_step": 300.0}``."""
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
    p.add_argument("--budget-s", type=float, default=None,
                   help=f"wall-clock budget of all configurations in seconds (default "
                        f"{BUDGET_S:.0f}, with --small {SMALL_BUDGET_S:.0f})")
    p.add_argument("--only", nargs="+", default=list(PARTS), choices=PARTS, metavar="PART",
                   help=f"run only these parts (in the fixed order): {', '.join(PARTS)}")
    p.add_argument("--accum", nargs="+", type=int, default=[], metavar="N",
                   help="also measure the profile steps (paper_step, amos_step) with N "
                        "gradient-accumulation microbatches forced (configs paper_step_accumN; "
                        "1 = the whole batch in one pass; sets train.grad_accum_steps)")
    p.add_argument("--monai-batch", type=int, default=1, choices=[1, 2],
                   help="batch of the batch-1 MONAI side by side (default 1)")
    p.add_argument("--timeout", action="append", default=[], metavar="NAME=SECONDS",
                   help="time limit of a configuration or a whole part (repeatable), over the "
                        "defaults of benchmarks/gpu/plan.py TIMEOUTS")
    p.add_argument("--min-start-s", type=float, default=20.0,
                   help="do not start a configuration with less budget left (default 20 s: "
                        "importing jax and building the model take that)")
    p.add_argument("--log-dir", type=Path, default=None,
                   help="per-configuration logs, the steps' optimized HLO and the HLO summary "
                        "(default: a new folder under the system's temp dir, printed)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help=f"persistent compilation cache shared by the processes (default "
                        f"{CACHE_ROOT}/bench_gpu, with --small bench_gpu_small)")
    p.add_argument("--no-cache", action="store_true",
                   help="no persistent compilation cache (cold compile times)")
    p.add_argument("--autotune-dir", type=Path, default=None,
                   help="XLA's autotune results, one file per configuration (default "
                        f"{AUTOTUNE_DIR.relative_to(RESULTS_DIR.parent.parent)}; with --small "
                        "<log dir>/autotune)")
    p.add_argument("--record-unmeasured", metavar="REASON", default=None,
                   help="measure nothing: write the output with every figure null and REASON")
    p.add_argument("--list", action="store_true",
                   help="print the configurations and the estimated GPU run, and exit")
    args = p.parse_args(argv)
    if args.budget_s is None:
        args.budget_s = SMALL_BUDGET_S if args.small else BUDGET_S
    return args


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


def _driver() -> dict | None:
    """``nvidia-smi``'s driver version, GPU name and memory of the first GPU; None without it."""
    if not _has_gpu():
        return None
    query = "--query-gpu=driver_version,name,memory.total"
    try:
        line = subprocess.run(["nvidia-smi", query, "--format=csv,noheader"], check=True,
                              capture_output=True, text=True, timeout=30).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as err:
        return {"error": str(err)[:200]}
    version, name, memory = (f.strip() for f in (line.split(",") + ["", ""])[:3])
    return {"driver_version": version, "gpu": name, "memory_total": memory}


def _cpu_guard(result: dict, small: bool) -> dict:
    """Full mode whose children ran on the CPU: drop every figure, say so (never CPU numbers
    in gpu_latest.json)."""
    backends = {r.get("backend") for r in result["records"] if r.get("backend")}
    if small or not backends or backends - {"cpu"}:
        return result
    cleared = figures.unmeasured_result(
        f"measured on {sorted(backends)}, not a GPU: figures dropped", result["measured_at"])
    return {**cleared, "records": result["records"]}


def _configs(args: argparse.Namespace, small: bool):
    return plan(tuple(args.only), small=small, accum=tuple(args.accum),
                monai_batch=args.monai_batch, timeouts=_timeouts(args.timeout))


def gpu_estimate(args: argparse.Namespace) -> dict:
    """The estimate of the full-size GPU run of ``args``' parts within the GPU budget (also
    printed by the CPU rehearsal: the run it rehearses)."""
    budget = args.budget_s if not args.small else BUDGET_S
    return estimate(_configs(args, small=False), budget, args.min_start_s)


def run(args: argparse.Namespace) -> dict:
    """Measure ``args``' plan; the result dict written to the output file."""
    configs = _configs(args, args.small)
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="gpu_bench_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    cache = None if args.no_cache else (
        args.cache_dir or CACHE_ROOT / ("bench_gpu_small" if args.small else "bench_gpu"))
    autotune = args.autotune_dir or (log_dir / "autotune" if args.small else AUTOTUNE_DIR)
    est = gpu_estimate(args)
    print(format_estimate(est), flush=True)
    print(f"{len(configs)} configurations, budget {args.budget_s:.0f} s, logs in {log_dir}, "
          f"compilation cache {cache}, autotune results in {autotune}", flush=True)
    measured_at, t0 = _utc_now(), time.perf_counter()
    runner = functools.partial(run_config, shared=shared_env(log_dir, cache),
                               autotune_dir=autotune)
    records = with_plan(run_all(configs, args.budget_s, log_dir, args.min_start_s, run=runner))
    figs, notes = figures.figures(records)
    figs["bench_wall_s"] = time.perf_counter() - t0
    summaries = [r["hlo_summary"] for r in records if "hlo_summary" in r]
    if summaries:
        from benchmarks.gpu.hlo_summary import format_summary

        (log_dir / "hlo_summary.txt").write_text(
            "\n\n".join(format_summary(s) for s in summaries) + "\n")
    device = figures.device(records)
    result = {
        "device": device, "measured_at": measured_at,
        "versions": figures.versions(records, _driver()), **figs, "figure_notes": notes,
        # Rehearsal figures are not speed figures: no pass/fail for them.
        "targets": None if args.small else figures.targets(figs, device),
        "small": args.small, "budget_s": args.budget_s, "command": sys.argv,
        "estimated_gpu_run_s": est["total_s"], "compilation_cache": cache and str(cache),
        "autotune_dir": str(autotune),
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
        for cfg in _configs(args, args.small):
            print(f"{cfg.part:<16} {cfg.name:<36} {cfg.kind:<12} limit {cfg.timeout_s:.0f} s")
        est = gpu_estimate(args)
        print(format_estimate(est))
        return {"estimate": est}
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
