"""Retries for transient tracking-store errors, with a bounded exponential back-off.

Many trials logging at once to one `mlflow server` (SQLite or PostgreSQL behind it) meet errors
that go away by themselves: SQLite's "database is locked", a PostgreSQL deadlock, a server that
is restarting (connection refused), HTTP 429 / 5xx from a proxy. `with_retries` repeats the call
a few times with growing pauses; anything else (a bad parameter, a missing run) fails at once.

MLflow's own HTTP client already retries 429/5xx and connection errors inside one request
(`MLFLOW_HTTP_REQUEST_MAX_RETRIES`); this layer also covers local stores (SQLite files), errors the
server answers with a JSON body, and a server that stays away longer than one request's retries.
"""

from __future__ import annotations

import logging
import random
import re
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

_log = logging.getLogger(__name__)

#: MLflow error codes that mean "try again later" (HTTP 429 / 503 / 504 on a server).
TRANSIENT_ERROR_CODES = frozenset(
    {"TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "REQUEST_LIMIT_EXCEEDED", "DEADLINE_EXCEEDED"}
)

#: Message fragments of transient failures that reach us only as text (MLflow wraps the
#: `requests`/`urllib3`/driver exception into a plain `MlflowException` message).
_TRANSIENT_TEXT = (
    "database is locked",  # SQLite writer contention
    "deadlock detected",  # PostgreSQL
    "could not serialize access",  # PostgreSQL serialization failure
    "connection refused",
    "max retries exceeded",  # urllib3 gave up connecting or on 429/5xx responses
    "connection aborted",
    "connection reset",
    "remotedisconnected",
    "server closed the connection unexpectedly",  # PostgreSQL backend went away
    "too many 429 error responses",
    "too many 500 error responses",
    "too many 502 error responses",
    "too many 503 error responses",
    "too many 504 error responses",
)

#: "failed with error code 502 != 200": a 5xx/429 whose body was not MLflow's JSON (a proxy).
_HTTP_STATUS_TEXT = re.compile(r"failed with error code (\d{3})")


def _is_transient_status(status: int) -> bool:
    return status == 429 or 500 <= status <= 599 and status != 501


def _chain(err: BaseException) -> list[BaseException]:
    """`err` and its causes / contexts (MLflow re-raises driver errors `from` them)."""
    seen: list[BaseException] = []
    while err is not None and all(err is not s for s in seen):
        seen.append(err)
        err = err.__cause__ or err.__context__
    return seen


def _one_is_transient(err: BaseException) -> bool:
    if isinstance(err, ConnectionError | TimeoutError):
        return True
    if isinstance(err, sqlite3.OperationalError) and "database is locked" in str(err):
        return True
    error_code = getattr(err, "error_code", None)  # MlflowException and RestException
    if isinstance(error_code, str) and error_code in TRANSIENT_ERROR_CODES:
        return True
    response = getattr(err, "response", None)  # requests.HTTPError
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and _is_transient_status(status):
        return True
    text = str(err).lower()
    if any(fragment in text for fragment in _TRANSIENT_TEXT):
        return True
    match = _HTTP_STATUS_TEXT.search(text)
    return match is not None and _is_transient_status(int(match.group(1)))


def is_transient(err: BaseException) -> bool:
    """True when `err` (or an exception it was raised from) is worth retrying: a connection
    error or timeout, SQLite's "database is locked", an MLflow error code in
    `TRANSIENT_ERROR_CODES`, HTTP 429 or 5xx (not 501), or such a failure wrapped as text."""
    return any(_one_is_transient(e) for e in _chain(err))


def backoff_delay(attempt: int, base_delay: float, max_delay: float) -> float:
    """Upper bound of the pause after failed attempt `attempt` (0-based):
    `min(max_delay, base_delay * 2**attempt)`."""
    return min(max_delay, base_delay * 2.0**attempt)


def with_retries(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay: float = 0.2,
    max_delay: float = 5.0,
    transient: Callable[[BaseException], bool] = is_transient,
) -> T:
    """`fn()`, called up to `attempts` times while it raises an error `transient` accepts.

    After failed attempt `i` (0-based) it sleeps a random time in
    `[d/2, d]`, `d = backoff_delay(i, base_delay, max_delay)`: the jitter keeps many trials that
    failed together from retrying together. The whole wait is bounded by
    `sum(backoff_delay(i) for i < attempts - 1)`. A non-transient error, or the last attempt's
    error, is raised unchanged.
    """
    if attempts < 1:
        raise ValueError(f"with_retries: attempts must be >= 1, got {attempts}")
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as err:
            if attempt == attempts - 1 or not transient(err):
                raise
            delay = backoff_delay(attempt, base_delay, max_delay)
            delay *= random.uniform(0.5, 1.0)
            _log.warning(
                "transient tracking error (attempt %d of %d), retrying in %.2f s: %s",
                attempt + 1,
                attempts,
                delay,
                str(err).splitlines()[0][:200] if str(err) else type(err).__name__,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises
