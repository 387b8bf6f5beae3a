"""Run each configuration in its own process with its own time limit, under one time budget.

A configuration gets ``min(its limit, budget left)`` seconds; one that cannot start with at
least ``min_start_s`` seconds left is recorded as ``skipped`` with the reason, so a run never
outlasts its budget by more than the last process's teardown. A process past its limit is
killed with its whole process group (pytest workers, XLA's compiler threads) and recorded as
``timeout``; the next configuration still runs. Every process gets
``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (JAX and torch take the device in turn, and the peak
each reports is its own), the run's shared environment (`shared_env`: one persistent
compilation cache, ``XLA_CLIENT_MEM_FRACTION=0.95`` so a peak can be compared with the card's
memory, the folder the batch-1 steps write their optimized HLO to), XLA's autotune results
dumped to ``<autotune_dir>/<name>.textproto`` (JAX configurations), and writes its
stdout/stderr to ``<log_dir>/<name>.log``.

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
from benchmarks.gpu.jax_steps import HLO_DIR_ENV
from benchmarks.gpu.plan import GpuConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Device-memory fraction JAX may take, so that a peak near the card's size is measured rather
#: than cut at JAX's default 75 % (both names: newer and older jax).
MEM_FRACTION = "0.95"
#: Kinds whose processes run JAX computations (the autotune dump applies to them).
_JAX_KINDS = ("step", "profile_step", "sample", "hlo", "conv_layers")
#: The CPU rehearsal only checks the harness: XLA:CPU's LLVM level 0 compiles several times
#: faster (seconds per configuration on a loaded 2-core machine); never used at full size.
SMALL_XLA_FLAGS = "--xla_backend_optimization_level=0"
_OOM_WORDS = ("RESOURCE_EXHAUSTED", "out of memory", "OutOfMemoryError", "Out of memory")


def shared_env(log_dir: Path, cache_dir: Path | None) -> dict[str, str]:
    """The environment every configuration of one run shares: the persistent compilation cache
    in ``cache_dir`` (None: no cache; every entry kept, however short its compile), the memory
    fraction, and ``<log_dir>/hlo`` for the batch-1 steps' optimized HLO."""
    env = {"XLA_CLIENT_MEM_FRACTION": MEM_FRACTION, "XLA_PYTHON_CLIENT_MEM_FRACTION": MEM_FRACTION,
           HLO_DIR_ENV: str(log_dir / "hlo")}
    if cache_dir is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir),
                   JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
    return env


def config_env(cfg: GpuConfig, shared: dict[str, str] | None,
               autotune_dir: Path | None) -> dict[str, str]:
    """``shared`` plus, for a JAX configuration, XLA's autotune dump to
    ``<autotune_dir>/<cfg.name>.textproto`` (written where XLA autotunes: on a GPU)."""
    env = dict(shared or {})
    if autotune_dir is not None and cfg.kind in _JAX_KINDS:
        autotune_dir.mkdir(parents=True, exist_ok=True)
        env["XLA_FLAGS"] = (f"--xla_gpu_dump_autotune_results_to="
                            f"{autotune_dir / (cfg.name + '.textproto')}")
    return env


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
    return child_outcome(run, timeout_s)


def child_outcome(run: dict, timeout_s: float) -> dict:
    """The record of a measuring process from `run_command`'s result: its printed record
    (``status`` ok; also when it was killed after printing it, e.g. in torch's or XLA's
    teardown: then with a ``note``), else the failure."""
    record = _result_line(run["stdout"]) if run["returncode"] == 0 or run["timed_out"] else None
    if record is None:
        return {**_failure(run, timeout_s), "wall_s": run["wall_s"]}
    late = {"note": f"killed at its {timeout_s:.0f} s limit after printing its record"} \
        if run["timed_out"] else {}
    return {"status": "ok", **record, **late, "wall_s": run["wall_s"]}


def _hlo_record(cfg: GpuConfig, timeout_s: float, log_dir: Path, env: dict[str, str]) -> dict:
    """`hlo_summary` of the optimized HLO the step ``cfg.extra["step"]`` wrote; where it wrote
    none (timed out, skipped), a child compiles that step to write it first."""
    from benchmarks.gpu.hlo_summary import summarise_text

    t0 = time.perf_counter()
    text = Path(env.get(HLO_DIR_ENV) or log_dir / "hlo") / f"{cfg.extra['step']}.txt"
    rec: dict = {"status": "ok", "source": "written by the step"}
    if not text.is_file():
        rec = {**_child_record(cfg, timeout_s, log_dir, {**env, HLO_DIR_ENV: str(text.parent)}),
               "source": "compiled for the summary"}
        if rec["status"] != "ok":
            return rec
    try:
        rec["hlo_summary"] = {"file": text.name, **summarise_text(text.read_text())}
    except (OSError, ValueError) as err:
        rec.update(status="error", error=f"{text}: {err}")
    return {**rec, "hlo_text": str(text), "wall_s": time.perf_counter() - t0}


def _external_record(cfg: GpuConfig, timeout_s: float, log_dir: Path,
                     env: dict[str, str]) -> dict:
    """The conv-layer timings or the GPU test run, as commands (`external`)."""
    if cfg.kind == "conv_layers":
        cmd = external.conv_layers_command(cfg.small, log_dir / f"{cfg.name}.json", timeout_s,
                                           cfg.extra)
    else:
        cmd, env = external.pytest_command(cfg.small), {**env, **external.pytest_env(cfg.small)}
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
            "layers": external.read_conv_layers(log_dir / f"{cfg.name}.json", run["stdout"])}


def run_config(cfg: GpuConfig, timeout_s: float, log_dir: Path,
               shared: dict[str, str] | None = None, autotune_dir: Path | None = None) -> dict:
    """The record of one configuration, its ``name``/``part``/``kind`` and limit included;
    ``shared``: `shared_env`; ``autotune_dir``: where XLA dumps its autotune results."""
    base = {"name": cfg.name, "part": cfg.part, "kind": cfg.kind, "size": list(cfg.size),
            "num_classes": cfg.num_classes, "batch": cfg.batch, "conv_impl": cfg.conv_impl,
            "timeout_s": timeout_s}
    env = config_env(cfg, shared, autotune_dir)
    if cfg.kind == "hlo":
        return {**base, **_hlo_record(cfg, timeout_s, log_dir, env)}
    if cfg.kind in ("conv_layers", "pytest"):
        return {**base, **_external_record(cfg, timeout_s, log_dir, env)}
    return {**base, **_child_record(cfg, timeout_s, log_dir, env)}


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
    step, hlo = rec.get("step_s"), rec.get("hlo_summary")
    what = (f"step {step:.4f} s" + (f", forward {rec['forward_s']:.4f} s"
                                    if rec.get("forward_s") else "") if step is not None
            else f"{len(hlo['flagged'])} flagged of {hlo['convolutions']['total']} convs" if hlo
            else f"passed {rec['passed']} failed {rec['failed']}" if "passed" in rec
            else rec.get("error", ""))
    print(f"  {rec['name']:<34} {rec['status']:<8} {what}"[:200], flush=True)
