"""`experiments.tracking.retry`: which errors are transient, the bounded back-off, and a real call
that succeeds once a `mlflow server` that was down comes up."""

import sqlite3
import subprocess
import time

import pytest
from diffseg3d.experiments.tracking.retry import backoff_delay, is_transient, with_retries
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    INVALID_PARAMETER_VALUE,
    RESOURCE_DOES_NOT_EXIST,
    RESOURCE_EXHAUSTED,
    TEMPORARILY_UNAVAILABLE,
)


class Flaky:
    """Raises `error` on the first `failures` calls, then returns "ok"."""

    def __init__(self, failures: int, error: Exception):
        self.failures = failures
        self.error = error
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


def test_transient_failures_are_retried_until_success():
    flaky = Flaky(3, ConnectionRefusedError("connection refused"))
    assert with_retries(flaky, attempts=5, base_delay=0.001) == "ok"
    assert flaky.calls == 4


def test_attempts_bound_the_calls_and_the_last_error_is_raised():
    flaky = Flaky(10, TimeoutError("slow"))
    with pytest.raises(TimeoutError, match="slow"):
        with_retries(flaky, attempts=3, base_delay=0.001)
    assert flaky.calls == 3


def test_a_permanent_error_is_raised_at_once():
    flaky = Flaky(1, MlflowException("no such run", error_code=RESOURCE_DOES_NOT_EXIST))
    with pytest.raises(MlflowException, match="no such run"):
        with_retries(flaky, attempts=5, base_delay=0.001)
    assert flaky.calls == 1


def test_a_custom_transient_predicate_is_used():
    flaky = Flaky(2, KeyError("soon"))
    assert with_retries(flaky, base_delay=0.001, transient=lambda e: isinstance(e, KeyError))
    assert flaky.calls == 3


def test_attempts_below_one_are_refused():
    with pytest.raises(ValueError, match="attempts must be >= 1, got 0"):
        with_retries(lambda: 1, attempts=0)


def test_back_off_doubles_up_to_the_cap():
    assert [backoff_delay(i, 0.2, 5.0) for i in range(7)] == pytest.approx(
        [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    )


def test_pauses_are_at_least_half_the_back_off():
    flaky = Flaky(3, ConnectionResetError("reset"))
    start = time.monotonic()
    with_retries(flaky, attempts=4, base_delay=0.05, max_delay=0.1)
    # pauses after failures 0, 1, 2: at least 0.025 + 0.05 + 0.05 s (jitter in [d/2, d])
    assert time.monotonic() - start >= 0.125


def _real_locked_error(path) -> sqlite3.OperationalError:
    """SQLite's own "database is locked": a second writer while the first holds the lock."""
    first = sqlite3.connect(path, isolation_level=None)
    first.execute("create table t (x)")
    first.execute("begin exclusive")
    second = sqlite3.connect(path, timeout=0)
    try:
        second.execute("insert into t values (1)")
    except sqlite3.OperationalError as err:
        return err
    finally:
        second.close()
        first.close()
    raise AssertionError("the second writer was not locked out")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (ConnectionRefusedError(), True),
        (TimeoutError(), True),
        (sqlite3.OperationalError("no such table: runs"), False),
        (MlflowException("busy", error_code=TEMPORARILY_UNAVAILABLE), True),
        (MlflowException("slow down", error_code=RESOURCE_EXHAUSTED), True),
        (MlflowException("bad value", error_code=INVALID_PARAMETER_VALUE), False),
        (MlflowException("API request to endpoint /x failed with error code 502 != 200"), True),
        (MlflowException("API request to endpoint /x failed with error code 501 != 200"), False),
        (MlflowException("API request to endpoint /x failed with error code 404 != 200"), False),
        (MlflowException("(psycopg2.errors.DeadlockDetected) deadlock detected"), True),
        (ValueError("config.name must be a safe name"), False),
    ],
)
def test_is_transient(error, expected):
    assert is_transient(error) is expected


def test_real_database_is_locked_is_transient_also_when_wrapped(tmp_path):
    locked = _real_locked_error(tmp_path / "t.db")
    assert "database is locked" in str(locked)
    assert is_transient(locked)
    try:
        try:
            raise locked
        except sqlite3.OperationalError as err:
            raise RuntimeError("store failed") from err
    except RuntimeError as wrapped:
        assert is_transient(wrapped)
    assert not is_transient(RuntimeError("store failed"))


@pytest.mark.slow
def test_a_call_succeeds_once_the_server_comes_up(tmp_path, monkeypatch):
    """A real `mlflow server` that is started only after the first attempts were refused."""
    from mlflow.tracking import MlflowClient

    from benchmarks.mlflow_load import _stop, free_port, start_mlflow_server

    # Our retries, not MLflow's in-request ones, must carry the call over the outage.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    port = free_port()
    client = MlflowClient(tracking_uri=f"http://127.0.0.1:{port}")
    server: list[subprocess.Popen] = []
    errors: list[BaseException] = []

    def search():
        if len(errors) == 2 and not server:
            server.append(
                start_mlflow_server(
                    f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "artifacts",
                    port=port, workers=1, log=tmp_path / "server.log",
                )
            )  # fmt: skip
        try:
            return client.search_experiments()
        except MlflowException as err:
            errors.append(err)
            raise

    try:
        experiments = with_retries(search, attempts=60, base_delay=0.5, max_delay=4.0)
    finally:
        if server:
            _stop(server[0])
    assert len(errors) >= 2
    assert all(is_transient(e) for e in errors)
    assert "Connection refused" in str(errors[0]) or "Max retries" in str(errors[0])
    assert [e.name for e in experiments] == ["Default"]
