"""`make bench`: time every configuration of `configs.plan` in its own subprocess, print a
table and the summary, and write the records to `benchmarks/results/latest.json`.

Usage::

    python -m benchmarks.run                 # full CPU plan (<= 15 min budget), latest.json
    python -m benchmarks.run --quick         # only 32x32x16 -> results/quick.json
    python -m benchmarks.run --only NAME     # one configuration (repeatable) -> results/only.json
    python -m benchmarks.run --groups levers # the lever and conv-layer configs -> levers.json

Options are documented in ``--help``. The time budget (``--budget-s``, default 870 s) is
enforced: a configuration gets at most the time left as its subprocess timeout, and those that
do not start in time are recorded as ``skipped``, so the run never exceeds the budget; the
contract configurations run first. The ratios of ``configs.PAIRS`` (recycling / plain) are
measured by ``benchmarks.cpu.paired`` in one process with interleaved steps, right after the
baseline's own record. The MONAI reference is optional and skipped when ``monai`` (torch) is
not importable.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import RESULTS_DIR
from benchmarks.cpu.configs import PAIRS, BenchConfig, plan
from benchmarks.cpu.machine import load_average, machine_info
from benchmarks.cpu.measure import RESULT_PREFIX
from benchmarks.cpu.report import format_summary, format_table
from benchmarks.cpu.summary import summarise

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Stop starting new configurations when fewer seconds than this remain (a subprocess spends
#: seconds just importing jax).
MIN_SECONDS_TO_START = 20.0


def child_env(cfg: BenchConfig) -> dict[str, str]:
    """Environment of the measuring subprocess: the parent's, plus the config's XLA flags."""
    env = dict(os.environ)
    flags = " ".join(f for f in (env.get("XLA_FLAGS", ""), cfg.xla_flags) if f)
    if flags:
        env["XLA_FLAGS"] = flags
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    pythonpath = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = f"{REPO_ROOT}{os.pathsep}{pythonpath}" if pythonpath else str(REPO_ROOT)
    return env


def parse_child_output(stdout: str) -> dict | None:
    """The record on the child's ``BENCH_RESULT {json}`` line, None if it printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def _run_child(module_args: list[str], cfg: BenchConfig, base: dict, timeout_s: float) -> dict:
    """``python -m <module_args>`` in a fresh process with ``cfg``'s environment: its
    ``BENCH_RESULT`` record merged over ``base``, or ``base`` with status timeout/error."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", *module_args],
            cwd=REPO_ROOT, env=child_env(cfg), capture_output=True, text=True, timeout=timeout_s,
        )
    except subprocess.TimeoutExpired:
        return {**base, "status": "timeout", "error": f"killed after {timeout_s:.0f} s",
                "wall_s": time.perf_counter() - t0}
    record = parse_child_output(proc.stdout)
    if proc.returncode != 0 or record is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {**base, "status": "error", "error": f"exit {proc.returncode}: " + " | ".join(tail),
                "wall_s": time.perf_counter() - t0}
    return {**base, "status": "ok", **record, "wall_s": time.perf_counter() - t0}


def run_config(cfg: BenchConfig, timeout_s: float) -> dict:
    """Measure ``cfg`` in a fresh ``python -m benchmarks.cpu.measure`` process."""
    base = {"name": cfg.name, "workload": cfg.workload, "model": cfg.model,
            "group": cfg.group, "load_before": load_average()}
    return _run_child(["benchmarks.cpu.measure", cfg.to_json()], cfg, base, timeout_s)


def run_pair(key: str, a: BenchConfig, b: BenchConfig, timeout_s: float, rounds: int = 5) -> dict:
    """``benchmarks.cpu.paired A B --emit`` in a fresh process: the interleaved ratio B / A."""
    base = {"name": f"paired_{key}", "a_name": a.name, "b_name": b.name,
            "load_before": load_average()}
    args = ["benchmarks.cpu.paired", a.name, b.name, "--rounds", str(rounds), "--emit"]
    return _run_child(args, a, base, timeout_s)


def monai_status() -> str:
    """MONAI's DiffusionModelUNet is an optional second reference (torch on CPU)."""
    if importlib.util.find_spec("monai") is None:
        return "skipped: monai not installed"
    return "skipped: monai installed but the MONAI benchmark is not implemented"


def select(configs: list[BenchConfig], only: list[str], groups: list[str]) -> list[BenchConfig]:
    """Filter by exact names (``--only``) or groups (``--groups``); unknown names are errors."""
    if only:
        known = {c.name: c for c in configs}
        missing = [n for n in only if n not in known]
        if missing:
            raise SystemExit(f"--only: unknown configuration(s) {missing}; known: {sorted(known)}")
        return [known[n] for n in only]
    return [c for c in configs if c.group in groups]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="only the 32x32x16 configurations")
    p.add_argument("--only", action="append", default=[], metavar="NAME",
                   help="run only this configuration (repeatable); see --list")
    p.add_argument("--groups", nargs="+", default=["contract", "memory"],
                   choices=["contract", "memory", "levers", "gpu"],
                   help="configuration groups to run (default: contract memory)")
    p.add_argument("--gpu", action="store_true",
                   help="plan for a GPU: adds 256x256x48 and 192x128x128 steps (group gpu)")
    p.add_argument("--budget-s", type=float, default=870.0,
                   help="wall-clock budget for all configurations (default 870 s < 15 min)")
    p.add_argument("--out", type=Path, default=None,
                   help="output JSON (default results/latest.json for the default run, else "
                        "results/<quick|only|groups>.json)")
    p.add_argument("--list", action="store_true", help="print the configuration names and exit")
    return p.parse_args(argv)


def default_out(args: argparse.Namespace) -> Path:
    if args.out is not None:
        return args.out
    if args.quick:
        return RESULTS_DIR / "quick.json"
    if args.only:
        return RESULTS_DIR / "only.json"
    if sorted(args.groups) != ["contract", "memory"] or args.gpu:
        return RESULTS_DIR / ("_".join(args.groups) + ".json")
    return RESULTS_DIR / "latest.json"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    configs = plan(quick=args.quick, gpu=args.gpu)
    if args.list:
        for c in configs:
            print(f"{c.group:<9} {c.name}")
        return {}
    groups = list(args.groups) + (["gpu"] if args.gpu else [])
    chosen = configs if args.quick else select(configs, args.only, groups)
    print(f"{len(chosen)} configurations, budget {args.budget_s:.0f} s; "
          f"MONAI reference: {monai_status()}", flush=True)

    start = time.perf_counter()
    records = []
    paired = {}
    # A pair runs once its A has been measured; both members must be in this run's plan.
    chosen_by_name = {c.name: c for c in chosen}
    pending = {key: pair for key, pair in PAIRS.items()
               if all(n in chosen_by_name for n in pair)}
    for cfg in chosen:
        left = args.budget_s - (time.perf_counter() - start)
        if left < MIN_SECONDS_TO_START:
            records.append({"name": cfg.name, "workload": cfg.workload, "model": cfg.model,
                            "group": cfg.group, "status": "skipped",
                            "error": "time budget spent"})
            continue
        rec = run_config(cfg, timeout_s=left)
        records.append(rec)
        step = rec.get("step_s")
        print(f"  {cfg.name:<44} {rec['status']:<7} "
              + (f"step {step:.3f} s  compile {rec['compile_s']:.1f} s  "
                 f"load {rec['load_before'][0]}" if step is not None else rec.get("error", "")),
              flush=True)
        done = {r["name"] for r in records}
        for key, (a_name, b_name) in list(pending.items()):
            left = args.budget_s - (time.perf_counter() - start)
            if a_name in done and left >= MIN_SECONDS_TO_START:
                del pending[key]
                paired[key] = run_pair(key, chosen_by_name[a_name], chosen_by_name[b_name],
                                       timeout_s=left)
                ratio = paired[key].get("b_over_a")
                print(f"  {'paired ' + key:<44} {paired[key]['status']:<7} "
                      + (f"{b_name} / {a_name} = {ratio:.3f}, interleaved in one process"
                         if ratio is not None else paired[key].get("error", "")), flush=True)

    by_name = {r["name"]: r for r in records}
    summary = summarise(by_name, paired)
    result = {
        **summary,
        "machine": machine_info(),
        "monai": monai_status(),
        "wall_s": time.perf_counter() - start,
        "budget_s": args.budget_s,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "records": records,
        "paired": paired,
    }
    out = default_out(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(format_table(records))
    print()
    print(format_summary(summary))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
