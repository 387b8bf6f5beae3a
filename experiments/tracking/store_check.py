"""Refuse a tracking store that a reading command could only damage or invent.

MLflow opens any tracking URI it is given: a missing SQLite file or an empty folder becomes a new
empty store (a mistyped `--tracking-uri` then reports "no runs"), a 0-byte `mlflow.db` is
re-initialised in place, and a truncated one fails deep inside SQLAlchemy. Reading commands
(`diffseg3d tables`, `predict`) call `check_readable_store` first: it only reads (SQLite opened
with `mode=ro`) and raises `TrackingStoreError` with one line naming the file or URI.
"""

from __future__ import annotations

import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from diffseg3d.experiments.config.errors import ConfigError

#: Tables every MLflow SQL tracking store has (and `alembic_version`, its schema version).
MLFLOW_TABLES = ("experiments", "runs", "metrics", "params", "tags", "alembic_version")

#: Seconds to wait for a tracking server's answer.
SERVER_TIMEOUT_S = 5.0

_SQLITE_MAGIC = b"SQLite format 3\x00"
_HINT = "check --tracking-uri / MLFLOW_TRACKING_URI; a reading command never creates a store"


class TrackingStoreError(ConfigError):
    """The tracking store cannot be read as it is; the message names the file or URI."""


def check_readable_store(uri: str) -> None:
    """Raise `TrackingStoreError` unless `uri` names an existing, readable MLflow store.

    sqlite:///PATH: PATH must be a non-empty, complete SQLite file with MLflow's tables;
    file:// URIs and plain paths: an existing MLflow file-store folder; http(s)://: a server
    that answers within `SERVER_TIMEOUT_S`; other SQLAlchemy URIs (postgresql://, mysql://):
    a database that accepts the connection and has MLflow's tables. Other schemes (databricks,
    plugins) are not checked. Nothing is created or written.
    """
    if not uri:
        raise TrackingStoreError(f"empty tracking URI; {_HINT}")
    scheme = urllib.parse.urlsplit(uri).scheme.lower()
    if scheme == "sqlite":
        _check_sqlite(uri)
    elif scheme in ("http", "https"):
        _check_server(uri)
    elif scheme == "file" or scheme == "" or len(scheme) == 1:  # len 1: a Windows drive letter
        _check_file_store(uri)
    elif scheme.split("+")[0] in ("postgresql", "mysql", "mssql"):
        _check_sql_database(uri)


def sqlite_path(uri: str) -> Path:
    """The file of a `sqlite:///PATH` URI (`sqlite:////abs` is absolute, `sqlite:///rel`
    relative, as in SQLAlchemy); query parameters are dropped."""
    if not uri.startswith("sqlite:///"):
        raise TrackingStoreError(f"tracking store {uri}: expected sqlite:///PATH (an in-memory "
                                 "SQLite store holds no runs to read)")
    return Path(urllib.parse.unquote(uri.removeprefix("sqlite:///").split("?", 1)[0]))


def _require(uri: str, path: Path, *, folder: bool) -> None:
    """`path` (of tracking store `uri`) exists and is a folder / a file."""
    kind = "folder" if folder else "file"
    if not path.exists():
        raise TrackingStoreError(f"tracking store {uri}: {kind} {path} does not exist; {_HINT}")
    if not (path.is_dir() if folder else path.is_file()):
        raise TrackingStoreError(f"tracking store {uri}: {path} is not a {kind}")


def _check_sqlite(uri: str) -> None:
    path = sqlite_path(uri)
    where = f"tracking store {uri}"
    _require(uri, path, folder=False)
    size = path.stat().st_size
    if size == 0:
        raise TrackingStoreError(f"{where}: {path} is empty (0 bytes), not an MLflow store")
    try:
        with open(path, "rb") as f:
            header = f.read(100)
    except OSError as err:
        raise TrackingStoreError(f"{where}: cannot read {path} ({err.strerror})") from None
    if not header.startswith(_SQLITE_MAGIC):
        raise TrackingStoreError(f"{where}: {path} is not an SQLite database")
    expected = _sqlite_size_from_header(header)
    if expected is not None and size < expected:
        raise TrackingStoreError(
            f"{where}: {path} is truncated ({size} bytes, its header says {expected}); restore it "
            "from a backup"
        )
    ro = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    try:
        conn = sqlite3.connect(ro, uri=True)
        try:
            rows = conn.execute("select name from sqlite_master where type='table'")
            names = {row[0] for row in rows}
            missing = [t for t in MLFLOW_TABLES if t not in names]
            if not missing:
                conn.execute("select count(*) from experiments").fetchone()
                conn.execute("select version_num from alembic_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise TrackingStoreError(f"{where}: {path} is damaged ({err})") from None
    if missing:
        raise TrackingStoreError(
            f"{where}: {path} is an SQLite database but not an MLflow store (no table "
            f"{', '.join(missing)})"
        )


def _sqlite_size_from_header(header: bytes) -> int | None:
    """Database size in bytes recorded in an SQLite header (page size x page count), or None
    when the header's count is not valid (written by an old SQLite; see the SQLite file format,
    "in-header database size")."""
    if len(header) < 100:
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    change_counter = int.from_bytes(header[24:28], "big")
    valid_for = int.from_bytes(header[92:96], "big")
    if pages == 0 or change_counter != valid_for:
        return None
    return page_size * pages


def _check_file_store(uri: str) -> None:
    if uri.startswith("file:"):
        parts = urllib.parse.urlsplit(uri)
        path = Path(urllib.parse.unquote(parts.path))
    else:
        path = Path(uri)
    _require(uri, path, folder=True)
    if not any(path.glob("*/meta.yaml")):
        raise TrackingStoreError(
            f"tracking store {uri}: {path} is not an MLflow file store (no <experiment>/meta.yaml)"
        )


def _check_server(uri: str) -> None:
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=SERVER_TIMEOUT_S):
            return
    except urllib.error.HTTPError:
        return  # it answered; MLflow reports what it does not like
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingStoreError(
            f"tracking server {uri} does not answer ({reason}); is `mlflow server` running there?"
        ) from None


def _check_sql_database(uri: str) -> None:
    import sqlalchemy

    shown = _without_password(uri)
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=_connect_timeout(uri))
    except Exception as err:  # missing driver, malformed URI
        raise TrackingStoreError(f"tracking store {shown}: {err}") from None
    try:
        with engine.connect():
            tables = set(sqlalchemy.inspect(engine).get_table_names())
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrackingStoreError(f"tracking store {shown} cannot be read: {first}") from None
    finally:
        engine.dispose()
    missing = [t for t in MLFLOW_TABLES if t not in tables]
    if missing:
        raise TrackingStoreError(
            f"tracking store {shown}: the database has no MLflow tables ({', '.join(missing)} "
            f"missing); {_HINT}"
        )


def _connect_timeout(uri: str) -> dict:
    return {"connect_timeout": int(SERVER_TIMEOUT_S)} if uri.startswith("postgresql") else {}


def _without_password(uri: str) -> str:
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
