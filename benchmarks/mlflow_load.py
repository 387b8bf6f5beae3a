"""Load test of the cluster's tracking store: many trials logging at once to one `mlflow server`.

Usage::

    python -m benchmarks.mlflow_load                       # SQLite and PostgreSQL behind it
    python -m benchmarks.mlflow_load --backends sqlite     # one backend
    python -m benchmarks.mlflow_load --processes 2 --points 40 --artifacts 2 --out /tmp/x.json

Each of `--processes` worker processes creates one run and logs `--points` metric points the way
a trial does (`experiments.tracking.mlflow_runs.TrialRun.log_metrics`: one `log_batch` request per
step holding that step's `--per-step` metrics), then `--artifacts` small files with
`log_artifact`. Every call goes through `experiments.tracking.retry.with_retries`
(`--attempts 1`: no retries of ours; MLflow's own HTTP retries are set with
`--mlflow-http-retries`). Afterwards the driver reads back every run's metric history and
artifact list and counts:

* failed calls: calls that still raised after the retries (their points count as "failed");
* lost points: points whose call returned normally but that the store does not hold;
* missing artifacts: uploads that returned normally but are not listed.

Servers and PostgreSQL listen on 127.0.0.1 only; the run stops at `--timeout-s` (steps not yet
sent are counted as "not attempted"), and each HTTP request times out after 30 s. The figures
go to `benchmarks/results/mlflow_load.json` with the date and the command.

The servers come from `benchmarks/mlflow_servers.py` (shared with the tests).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import RESULTS_DIR

# Those not used here are imported from here by the tests of the tracking layer.
from benchmarks.mlflow_servers import (  # noqa: F401
    free_port,
    mlflow_server,
    postgres_bindir,
    postgres_server,
    start_mlflow_server,
)
from benchmarks.mlflow_servers import stop_process_group as _stop  # noqa: F401

RESULTS = RESULTS_DIR / "mlflow_load.json"

#: Upper bounds on the load one invocation may generate (the traffic stays on loopback).
MAX_PROCESSES = 64
MAX_POINTS = 100_000
MAX_ARTIFACTS = 200
ARTIFACT_BYTES = 2048


# ---------------------------------------------------------------------------------------------
# Workers


@dataclass
class WorkerPlan:
    """What one worker process logs; `skip_every` > 0 deliberately leaves out every
    `skip_every`-th step while counting it as sent (to check the read-back counting)."""

    tracking_uri: str
    experiment_id: str
    index: int
    points: int
    per_step: int
    artifacts: int
    attempts: int
    mlflow_http_retries: int
    deadline_unix: float
    workdir: str
    skip_every: int = 0


@dataclass
class WorkerResult:
    index: int
    run_id: str | None = None
    calls: int = 0
    failed_calls: int = 0
    retried_attempts: int = 0
    points_sent: int = 0
    points_failed: int = 0
    points_not_attempted: int = 0
    points_skipped_on_purpose: int = 0
    artifacts_sent: int = 0
    artifacts_failed: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)
    #: Steps whose `log_batch` returned normally (or were skipped on purpose).
    sent_steps: list[int] = field(default_factory=list)
    #: Artifact file names whose upload returned normally.
    sent_artifacts: list[str] = field(default_factory=list)


def metric_value(index: int, step: int, key: int) -> float:
    """The value worker `index` logs for metric `key` at `step` (checked on read-back)."""
    return index * 1e6 + step + key / 10.0


def _note(result: WorkerResult, err: BaseException) -> None:
    text = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    if text not in result.errors and len(result.errors) < 5:
        result.errors.append(text)


def run_worker(plan: WorkerPlan) -> WorkerResult:
    """Log one run's metrics and artifacts like a trial; never raises (errors are counted)."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(plan.mlflow_http_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "30"
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    from diffseg3d.experiments.tracking.retry import is_transient, with_retries
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    result = WorkerResult(index=plan.index)
    start = time.monotonic()

    def counting(err: BaseException) -> bool:
        transient = is_transient(err)
        result.retried_attempts += transient
        return transient

    def call(fn):
        result.calls += 1
        return with_retries(fn, attempts=plan.attempts, transient=counting)

    client = MlflowClient(tracking_uri=plan.tracking_uri)
    steps = plan.points // plan.per_step
    try:
        run = call(lambda: client.create_run(plan.experiment_id, run_name=f"load-{plan.index}"))
    except Exception as err:
        result.failed_calls += 1
        result.points_not_attempted = steps * plan.per_step
        _note(result, err)
        result.seconds = time.monotonic() - start
        return result
    result.run_id = run.info.run_id
    for step in range(steps):
        if time.time() > plan.deadline_unix:
            result.points_not_attempted += (steps - step) * plan.per_step
            break
        now = int(time.time() * 1000)
        batch = [Metric(f"m{k}", metric_value(plan.index, step, k), now, step)
                 for k in range(plan.per_step)]  # fmt: skip
        if plan.skip_every and step % plan.skip_every == plan.skip_every - 1:
            result.points_skipped_on_purpose += len(batch)
            result.points_sent += len(batch)
            result.sent_steps.append(step)
            continue
        try:
            call(lambda batch=batch: client.log_batch(result.run_id, metrics=batch))
            result.points_sent += len(batch)
            result.sent_steps.append(step)
        except Exception as err:
            result.failed_calls += 1
            result.points_failed += len(batch)
            _note(result, err)
    folder = Path(plan.workdir) / f"worker-{plan.index}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(plan.artifacts):
        if time.time() > plan.deadline_unix:
            break
        path = folder / f"artifact-{i:03d}.txt"
        path.write_bytes(bytes((plan.index + i + j) % 251 for j in range(ARTIFACT_BYTES)))
        try:
            call(lambda path=path: client.log_artifact(result.run_id, str(path), "load"))
            result.artifacts_sent += 1
            result.sent_artifacts.append(path.name)
        except Exception as err:
            result.failed_calls += 1
            result.artifacts_failed += 1
            _note(result, err)
    result.seconds = time.monotonic() - start
    return result


# ---------------------------------------------------------------------------------------------
# Read-back and the figures


def read_back(tracking_uri: str, result: WorkerResult, per_step: int) -> dict[str, int]:
    """What the store holds of one worker's run: points stored with the expected value, points
    with another value, points lost (sent, the call returned normally, but not stored), and the
    same for artifacts."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    stored = wrong = lost = 0
    for k in range(per_step):
        history = client.get_metric_history(result.run_id, f"m{k}")
        by_step = {m.step: m.value for m in history}
        for step, value in by_step.items():
            if value == metric_value(result.index, step, k):
                stored += 1
            else:
                wrong += 1
        lost += sum(step not in by_step for step in result.sent_steps)
    listed = {Path(a.path).name for a in client.list_artifacts(result.run_id, "load")}
    return {
        "points_stored": stored,
        "points_wrong_value": wrong,
        "points_lost": lost,
        "artifacts_stored": len(listed),
        "artifacts_lost": sum(name not in listed for name in result.sent_artifacts),
    }


def run_backend(
    backend: str, *, processes: int, points: int, per_step: int, artifacts: int, attempts: int,
    mlflow_http_retries: int, workers: int, timeout_s: float, skip_every: int = 0,
) -> dict:
    """Start the backend and its `mlflow server`, run the workers, read back, count."""
    import mlflow  # noqa: F401  (fail early when MLflow is missing)
    from mlflow.tracking import MlflowClient

    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mlflow-load-")))
        if backend == "sqlite":
            backend_uri = f"sqlite:///{work / 'mlflow.db'}"
        elif backend == "postgresql":
            backend_uri = stack.enter_context(postgres_server())
        else:
            raise ValueError(f"unknown backend {backend!r} (sqlite, postgresql)")
        url = stack.enter_context(mlflow_server(backend_uri, work / "artifacts", workers=workers))
        client = MlflowClient(tracking_uri=url)
        exp_id = client.create_experiment(f"load-{backend}")
        deadline = time.time() + timeout_s
        plans = [
            WorkerPlan(url, exp_id, i, points, per_step, artifacts, attempts,
                       mlflow_http_retries, deadline, str(work / "files"), skip_every)
            for i in range(processes)
        ]  # fmt: skip
        start = time.monotonic()
        with multiprocessing.get_context("spawn").Pool(processes) as pool:
            results = pool.map(run_worker, plans)
        seconds = time.monotonic() - start
        counts = [read_back(url, r, per_step) if r.run_id else {} for r in results]
    return summarise(backend, results, counts, points=points, per_step=per_step,
                     artifacts=artifacts, seconds=seconds)  # fmt: skip


def summarise(
    backend: str, results: list[WorkerResult], counts: list[dict[str, int]], *, points: int,
    per_step: int, artifacts: int, seconds: float,
) -> dict:
    """Totals over workers (`counts`: `read_back` per worker, {} for a worker without a run)."""
    expected = len(results) * (points // per_step) * per_step
    total = {k: sum(getattr(r, k) for r in results) for k in (
        "calls", "failed_calls", "retried_attempts", "points_sent", "points_failed",
        "points_not_attempted", "points_skipped_on_purpose", "artifacts_sent",
        "artifacts_failed")}  # fmt: skip
    stored = sum(c.get("points_stored", 0) for c in counts)
    artifacts_stored = sum(c.get("artifacts_stored", 0) for c in counts)
    return {
        "backend": backend,
        "processes": len(results),
        "points_expected": expected,
        **total,
        "points_stored": stored,
        "points_wrong_value": sum(c.get("points_wrong_value", 0) for c in counts),
        "points_lost": sum(c.get("points_lost", 0) for c in counts),
        "points_missing": expected - stored,
        "artifacts_expected": len(results) * artifacts,
        "artifacts_stored": artifacts_stored,
        "artifacts_lost": sum(c.get("artifacts_lost", 0) for c in counts),
        "seconds": round(seconds, 1),
        "calls_per_s": round(total["calls"] / seconds, 1) if seconds > 0 else None,
        "errors": sorted({e for r in results for e in r.errors})[:10],
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.mlflow_load", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"], help="stores behind the server")
    parser.add_argument("--processes", type=int, default=16, help="concurrent logging processes")
    parser.add_argument("--points", type=int, default=2000, help="metric points per process")
    parser.add_argument("--per-step", type=int, default=4,
                        help="metrics per log_batch request (one trial step's metrics)")
    parser.add_argument("--artifacts", type=int, default=20, help="small artifacts per process")
    parser.add_argument("--attempts", type=int, default=5,
                        help="with_retries attempts per call (1: no retries of ours)")
    parser.add_argument("--mlflow-http-retries", type=int, default=7,
                        help="MLFLOW_HTTP_REQUEST_MAX_RETRIES in the workers (MLflow's default 7)")
    parser.add_argument("--server-workers", type=int, default=4,
                        help="mlflow server --workers (its default 4)")
    parser.add_argument("--timeout-s", type=float, default=900.0,
                        help="per backend: workers stop sending at this deadline")
    parser.add_argument("--skip-every", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file of the figures")
    args = parser.parse_args(argv)
    if not 1 <= args.processes <= MAX_PROCESSES:
        parser.error(f"--processes must be in 1..{MAX_PROCESSES}, got {args.processes}")
    if not 1 <= args.per_step <= args.points <= MAX_POINTS:
        parser.error(f"need 1 <= --per-step <= --points <= {MAX_POINTS}")
    if not 0 <= args.artifacts <= MAX_ARTIFACTS:
        parser.error(f"--artifacts must be in 0..{MAX_ARTIFACTS}, got {args.artifacts}")
    if args.attempts < 1 or args.mlflow_http_retries < 0 or args.timeout_s <= 0:
        parser.error("--attempts >= 1, --mlflow-http-retries >= 0 and --timeout-s > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    record = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(
            ["python -m benchmarks.mlflow_load", *(sys.argv[1:] if argv is None else argv)]
        ),
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}",
        "load_average_1m_at_start": round(os.getloadavg()[0], 1),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "backends": [],
    }
    for backend in args.backends:
        figures = run_backend(
            backend, processes=args.processes, points=args.points, per_step=args.per_step,
            artifacts=args.artifacts, attempts=args.attempts,
            mlflow_http_retries=args.mlflow_http_retries, workers=args.server_workers,
            timeout_s=args.timeout_s, skip_every=args.skip_every,
        )  # fmt: skip
        record["backends"].append(figures)
        print(json.dumps({k: v for k, v in figures.items() if k != "errors"}), flush=True)
        for error in figures["errors"]:
            print(f"  {backend} error: {error}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

