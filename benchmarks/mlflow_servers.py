"""Throw-away local servers for the tracking-store load test and the tests: `mlflow server` and
PostgreSQL, on 127.0.0.1 only, each in its own process group and stopped with it.

- `mlflow_server(backend_uri, artifacts_dir)`: a running `mlflow server` (artifacts proxied to
  the folder); yields its URL. `start_mlflow_server` starts one without waiting.
- `postgres_server()`: a PostgreSQL server in a temporary data folder with an empty database;
  yields its SQLAlchemy URI. `postgres_bindir` finds the server binaries.
- `free_port()`: a free loopback port; `stop_process_group(proc)`: stop a server's group.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM,
                       wait_s: float = 20.0) -> None:
    """Stop `proc` and the process group it leads (started with `start_new_session`)."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(wait_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(wait_s)


def _wait_http(url: str, proc: subprocess.Popen, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"server exited with code {proc.returncode} before answering {url}; "
                f"log {log}:\n{log.read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    stop_process_group(proc)
    raise RuntimeError(f"server did not answer {url} within {timeout_s:.0f} s; log {log}")


def start_mlflow_server(
    backend_uri: str, artifacts_dir: str | os.PathLike, *, port: int, workers: int, log: Path
) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port` in its own process group (not yet answering)."""
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_uri,
        "--artifacts-destination", Path(artifacts_dir).resolve().as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    with open(log, "ab") as sink:
        return subprocess.Popen(
            cmd, stdout=sink, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str,
    artifacts_dir: str | os.PathLike,
    *,
    port: int | None = None,
    workers: int = 4,
    start_timeout_s: float = 240.0,
) -> Iterator[str]:
    """A running `mlflow server` (artifacts proxied to `artifacts_dir`); yields its URL.

    The first start on a new backend runs MLflow's schema migrations, hence the long timeout."""
    port = port or free_port()
    log = Path(artifacts_dir).resolve().parent / f"mlflow-server-{port}.log"
    Path(artifacts_dir).mkdir(parents=True, exist_ok=True)
    proc = start_mlflow_server(backend_uri, artifacts_dir, port=port, workers=workers, log=log)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/health", proc, start_timeout_s, log)
        yield url
    finally:
        stop_process_group(proc)


def postgres_bindir() -> Path | None:
    """Folder of the newest installed PostgreSQL server binaries (Debian: /usr/lib/postgresql/
    <major>/bin), else the folder of `initdb` on PATH, else None."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        newest = max(found, key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit()
                     else 0)
        return Path(newest).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_postgres_user() -> list[str]:
    """Command prefix for the server binaries: PostgreSQL refuses to run as root, so root runs
    them as the `postgres` system user (Debian's package creates it)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root without a `postgres` user to run PostgreSQL") from None
    return ["runuser", "-u", "postgres", "--"]


@contextlib.contextmanager
def postgres_server(
    *, port: int | None = None, database: str = "mlflow", user: str = "mlflow",
    start_timeout_s: float = 60.0,
) -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1 (temporary data folder, `trust` auth on
    loopback, removed afterwards) holding an empty `database`; yields its SQLAlchemy URI
    `postgresql+psycopg2://<user>@127.0.0.1:<port>/<database>`."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    prefix = _as_postgres_user()
    port = port or free_port()
    # Under the system temp folder (not pytest's 0700 root folder) so `postgres` can enter it.
    root = Path(tempfile.mkdtemp(prefix="diffseg3d-pg-"))
    data, log = root / "data", root / "server.log"
    proc = None
    try:
        if prefix:
            shutil.chown(root, "postgres", "postgres")
        subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", user, "--auth=trust",
             "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        cmd = [*prefix, str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1",
               "-p", str(port), "-k", str(root), "-c", "max_connections=200"]  # fmt: skip
        with open(log, "ab") as sink:
            proc = subprocess.Popen(
                cmd, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + start_timeout_s
        while True:
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port), "-q"]
            )
            if ready.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; log {log}:\n{log.read_text()}")
            time.sleep(0.3)
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", user, database],
            check=True, capture_output=True, text=True,
        )
        yield f"postgresql+psycopg2://{user}@127.0.0.1:{port}/{database}"
    finally:
        if proc is not None:
            stop_process_group(proc, signal.SIGINT)  # PostgreSQL's "fast" shutdown
        shutil.rmtree(root, ignore_errors=True)
