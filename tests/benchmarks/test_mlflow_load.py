"""`benchmarks.mlflow_load` counts right: points deliberately not logged are found missing on
read-back, a call that fails is a failed call (not a lost point), and a tiny end-to-end run
against a real `mlflow server` writes the figures with the date and the command."""

import json
import time

import pytest

from benchmarks.mlflow_load import WorkerPlan, main, read_back, run_worker, summarise


@pytest.fixture
def worker_env(monkeypatch):
    """`run_worker` sets these for its own process; restore them after an in-process run."""
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
                 "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"):  # fmt: skip
        monkeypatch.setenv(name, "0" if name != "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" else "false")


def _plan(uri, exp_id, workdir, **changes) -> WorkerPlan:
    fields = dict(tracking_uri=uri, experiment_id=exp_id, index=3, points=24, per_step=4,
                  artifacts=2, attempts=1, mlflow_http_retries=0,
                  deadline_unix=time.time() + 300, workdir=str(workdir))  # fmt: skip
    fields.update(changes)
    return WorkerPlan(**fields)


def test_points_not_logged_on_purpose_are_counted_lost(tmp_path, worker_env):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exp_id = MlflowClient(uri).create_experiment("load", (tmp_path / "art").as_uri())
    # 6 steps of 4 points; steps 2 and 5 are left out while counted as sent.
    result = run_worker(_plan(uri, exp_id, tmp_path / "files", skip_every=3))
    assert (result.failed_calls, result.points_sent, result.points_skipped_on_purpose) == (0, 24, 8)
    assert result.calls == 1 + 4 + 2  # create_run, 4 log_batch, 2 artifacts
    counts = read_back(uri, result, per_step=4)
    assert counts == {"points_stored": 16, "points_wrong_value": 0, "points_lost": 8,
                      "artifacts_stored": 2, "artifacts_lost": 0}  # fmt: skip
    figures = summarise("sqlite", [result], [counts], points=24, per_step=4, artifacts=2,
                        seconds=2.0)  # fmt: skip
    assert figures["points_expected"] == 24
    assert (figures["points_lost"], figures["points_missing"]) == (8, 8)
    assert figures["calls_per_s"] == 3.5


def test_a_failing_call_is_a_failed_call_not_a_lost_point(tmp_path, worker_env):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # No experiment 424242: create_run fails, nothing else is attempted.
    result = run_worker(_plan(uri, "424242", tmp_path / "files"))
    assert result.run_id is None
    assert (result.failed_calls, result.points_sent, result.points_not_attempted) == (1, 0, 24)
    assert result.errors and "MlflowException" in result.errors[0]
    figures = summarise("sqlite", [result], [{}], points=24, per_step=4, artifacts=2, seconds=1.0)
    assert (figures["points_lost"], figures["points_missing"], figures["failed_calls"]) == (
        0, 24, 1)  # fmt: skip


@pytest.mark.slow
def test_a_tiny_run_against_a_real_server_writes_its_figures(tmp_path):
    out = tmp_path / "load.json"
    argv = ["--backends", "sqlite", "--processes", "2", "--points", "16", "--per-step", "4",
            "--artifacts", "1", "--skip-every", "2", "--timeout-s", "300", "--out", str(out)]
    assert main(argv) == 0
    record = json.loads(out.read_text())
    assert record["command"] == "python -m benchmarks.mlflow_load " + " ".join(argv)
    assert record["date"].endswith("UTC")
    [sqlite] = record["backends"]
    # 2 processes x 4 steps of 4 points; every 2nd step (2 per process) left out on purpose.
    assert sqlite["points_expected"] == 32
    assert (sqlite["points_stored"], sqlite["points_lost"], sqlite["failed_calls"]) == (16, 16, 0)
    assert (sqlite["artifacts_stored"], sqlite["artifacts_lost"]) == (2, 0)
