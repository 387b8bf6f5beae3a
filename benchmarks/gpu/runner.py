"""Run each configuration in its own process with its own time limit, under one time budget.

A configuration gets ``min(its limit, budget left)`` seconds; one that cannot start with at
least ``min_start_s`` seconds left is recorded as ``skipped`` with the reason, so a run never
outlasts its budget by more than the last process's teardown. A process past its limit is
killed with its whole process group (pytest workers, XLA's compiler threads) and recorded as
``timeout``; the next configuration still runs. Every process gets
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (JAX and torch take the device in turn, and the peak
each reports is its own) and writes its stdout/stderr to ``<log_dir>/<name>.log``.

Record ``status``: ``ok`` | ``error`` | ``oom`` (the error text says out of memory) |
``timeout`` | ``skipped``; ``error`` holds the reason or the last lines of the log.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.gpu import external
from benchmarks.gpu.child import RESULT_PREFIX
from benchmarks.gpu.plan import GpuConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Optimized HLO of the batch-1 step only: the jitted function is `train_step`.
HLO_MODULE = "jit_train_step"
#: The CPU rehearsal only checks the harness: XLA:CPU's LLVM level 0 compiles several times
#: faster (seconds per configuration on a loaded 2-core machine); never used at full size.
SMALL_XLA_FLAGS = "--xla_backend_optimization_level=0"
_OOM_WORDS = ("RESOURCE_EXHAUSTED", "out of memory", "OutOfMemoryError", "Out of memory")


def child_env(small: bool, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The parent's environment plus: no preallocation, the repo on PYTHONPATH, the small
    mode's XLA flag, then ``extra`` (``XLA_FLAGS`` in ``extra`` are appended, not replaced)."""
    env = dict(os.environ)
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    extra = dict(extra or {})
    flags = [env.get("XLA_FLAGS", ""), SMALL_XLA_FLAGS if small else "", extra.pop("XLA_FLAGS", "")]
    if any(flags):
        env["XLA_FLAGS"] = " ".join(f for f in flags if f)
    env.update(extra)
    return env


def run_command(cmd: list[str], env: dict[str, str], timeout_s: float,
                log_path: Path) -> dict:
    """Run ``cmd`` in a new process group; kill the group after ``timeout_s``.

    Returns ``{"returncode": int | None (None: killed), "timed_out": bool, "stdout": str,
    "wall_s": float}``; stdout and stderr go to ``log_path`` too."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        timed_out = True
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n")
    return {"returncode": None if timed_out else proc.returncode, "timed_out": timed_out,
            "stdout": stdout, "stderr": stderr, "wall_s": time.perf_counter() - t0}


def _result_line(stdout: str) -> dict | None:
    """The record on the child's last ``BENCH_RESULT {json}`` line, None if none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    return None


def _failure(run: dict, timeout_s: float) -> dict:
    """``status``/``error`` of a process that was killed or exited non-zero."""
    if run["timed_out"]:
        return {"status": "timeout", "error": f"killed after its {timeout_s:.0f} s limit"}
    tail = (run["stderr"].strip() or run["stdout"].strip()).splitlines()[-4:]
    text = run["stderr"] + run["stdout"]
    status = "oom" if any(w in text for w in _OOM_WORDS) else "error"
    return {"status": status, "error": f"exit {run['returncode']}: " + " | ".join(tail)}


def _child_record(cfg: GpuConfig, timeout_s: float, log_dir: Path,
                  env_extra: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.gpu.child", cfg.to_json()]
    run = run_command(cmd, child_env(cfg.small, env_extra), timeout_s, log_dir / f"{cfg.name}.log")
    record = _result_line(run["stdout"]) if run["returncode"] == 0 else None
    if record is None:
        return {**_failure(run, timeout_s), "wall_s": run["wall_s"]}
    return {"status": "ok", **record, "wall_s": run["wall_s"]}


def _hlo_record(cfg: GpuConfig, timeout_s: float, log_dir: Path) -> dict:
    """Compile the batch-1 step with XLA dumping its HLO, then `hlo_summary` of the dump."""
    from benchmarks.hlo_summary import summarise_dir

    dump = log_dir / "hlo_dump"
    flags = f"--xla_dump_to={dump} --xla_dump_hlo_as_text --xla_dump_hlo_module_re={HLO_MODULE}"
    rec = _child_record(cfg, timeout_s, log_dir, {"XLA_FLAGS": flags})
    if rec["status"] == "ok":
        try:
            rec["hlo_summary"] = summarise_dir(dump, HLO_MODULE)
        except ValueError as err:
            rec.update(status="error", error=str(err))
    return {**rec, "dump_dir": str(dump)}


def _external_record(cfg: GpuConfig, timeout_s: float, log_dir: Path) -> dict:
    """The conv-layer probe or the GPU test run, as commands (`external`)."""
    if cfg.kind == "conv_layers":
        cmd, reason = external.conv_layers_command(cfg.small, log_dir / "conv_layers.json",
                                                   timeout_s)
        env = {}
    else:
        cmd, reason = external.pytest_command(cfg.small), None
        env = external.pytest_env(cfg.small)
    if cmd is None:
        return {"status": "skipped", "error": reason}
    run = run_command(cmd, child_env(cfg.small, env), timeout_s, log_dir / f"{cfg.name}.log")
    if cfg.kind == "pytest":
        # Failing tests are a result (counted), not a failed part: the part fails only when
        # pytest printed no summary line (killed, crashed, or collection broke).
        counts = None if run["timed_out"] else external.pytest_counts(run["stdout"])
        outcome = {"status": "ok", **counts} if counts else _failure(run, timeout_s)
        return {**outcome, "command": " ".join(cmd), "returncode": run["returncode"],
                "wall_s": run["wall_s"]}
    if run["returncode"] != 0:
        return {**_failure(run, timeout_s), "command": " ".join(cmd), "wall_s": run["wall_s"]}
    return {"status": "ok", "command": " ".join(cmd), "wall_s": run["wall_s"],
            "layers": external.read_conv_layers(log_dir / "conv_layers.json", run["stdout"])}


def run_config(cfg: GpuConfig, timeout_s: float, log_dir: Path) -> dict:
    """The record of one configuration, its ``name``/``part``/``kind`` and limit included."""
    base = {"name": cfg.name, "part": cfg.part, "kind": cfg.kind, "size": list(cfg.size),
            "num_classes": cfg.num_classes, "batch": cfg.batch, "timeout_s": timeout_s}
    if cfg.kind == "hlo":
        return {**base, **_hlo_record(cfg, timeout_s, log_dir)}
    if cfg.kind in ("conv_layers", "pytest"):
        return {**base, **_external_record(cfg, timeout_s, log_dir)}
    return {**base, **_child_record(cfg, timeout_s, log_dir)}


def run_all(configs: list[GpuConfig], budget_s: float, log_dir: Path, min_start_s: float = 20.0,
            clock: Callable[[], float] = time.monotonic,
            run: Callable[[GpuConfig, float, Path], dict] = run_config) -> list[dict]:
    """Records of ``configs`` in order: each run with ``min(cfg.timeout_s, budget left)``, or
    ``skipped`` when fewer than ``min_start_s`` seconds of the budget are left."""
    start = clock()
    records = []
    for cfg in configs:
        left = budget_s - (clock() - start)
        if left < min_start_s:
            records.append({"name": cfg.name, "part": cfg.part, "kind": cfg.kind,
                            "status": "skipped",
                            "error": f"time budget: {max(left, 0):.0f} s of {budget_s:.0f} s "
                                     f"left, a configuration needs {min_start_s:.0f} s to start"})
        else:
            records.append(run(cfg, min(cfg.timeout_s, left), log_dir))
        _print_record(records[-1])
    return records


def _print_record(rec: dict) -> None:
    step = rec.get("step_s")
    what = (f"step {step:.4f} s" if step is not None
            else f"passed {rec['passed']} failed {rec['failed']}" if "passed" in rec
            else rec.get("error", ""))
    print(f"  {rec['name']:<34} {rec['status']:<8} {what}"[:200], flush=True)
