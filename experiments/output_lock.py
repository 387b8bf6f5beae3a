"""One writer per output place: an exclusive lock file held while a command writes there.

`diffseg3d ablate`, `train` and `tables` each hold one `output_lock` while they write:

- ablate: one expansion of a grid in --out (its Tune folder `<grid>_<hash>`, MLflow parent run
  and trial runs), `<out>/locks/ablate_<grid>_<hash>.lock`;
- train: one trial folder `<out>/trials/<trial>_<config hash>` and its MLflow run,
  `<out>/locks/train_<trial>_<hash>.lock`;
- tables: its output folder, `.<out name>.tables.lock` beside it (so a refused or failed
  `tables` creates nothing in --out).

So a second launch of the same grid (same expansion: grid, profile, data) into the same --out
refuses at once, naming the first's host, pid and command, while another grid, the same grid on
another data set or profile, or another trial write side by side as before.

The lock is `fcntl.flock` (POSIX) on the lock file, which holds the holder as JSON (`host`,
`pid`, `command`, `started`). The kernel drops the lock when its process dies, however it dies,
so a lock file that still names a holder but can be locked was left by a process that is gone
(SIGKILL, a lost machine): it is taken over and the console says whose it was. On release the
file is emptied, not deleted (deleting it would let a third process lock a new file while a
second one still holds the old one). A file system without `flock` support (some network
mounts) gets a warning and no lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

#: Subfolder of --out holding the lock files of `ablate` and `train`.
LOCKS_FOLDER = "locks"
#: How long a refused launch waits for the holder's details to appear in a just-locked file.
READ_HOLDER_SECONDS = 2.0


class OutputLockedError(RuntimeError):
    """Another live process holds the lock of this output place; the message names it."""


@dataclasses.dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a lock: host name, process id, command line, start time (UTC)."""

    host: str
    pid: int
    command: str
    started: str

    @classmethod
    def this_process(cls) -> LockHolder:
        started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "python"
        return cls(host=socket.gethostname(), pid=os.getpid(), command=command, started=started)

    def describe(self) -> str:
        """`pid 123 on host h (since 2026-12-06T21:40:00Z): diffseg3d ablate paper ...`"""
        return f"pid {self.pid} on host {self.host} (since {self.started}): {self.command}"


def ablate_lock_path(out_dir: str | os.PathLike, experiment_folder: str) -> Path:
    """Lock file of one grid expansion (`runner.experiment_folder_name`) in `out_dir`."""
    return Path(out_dir) / LOCKS_FOLDER / f"ablate_{experiment_folder}.lock"


def train_lock_path(out_dir: str | os.PathLike, trial_folder: str) -> Path:
    """Lock file of one trial folder name (`<trial>_<config hash>`) in `out_dir`."""
    return Path(out_dir) / LOCKS_FOLDER / f"train_{trial_folder}.lock"


def tables_lock_path(out_dir: str | os.PathLike) -> Path:
    """Lock file of a `tables` output folder: hidden, beside it."""
    out = Path(out_dir).absolute()
    return out.parent / f".{out.name}.tables.lock"


def parse_holder(text: str) -> LockHolder | None:
    """The holder recorded in a lock file's text; None when empty (free) or unreadable."""
    try:
        data = json.loads(text)
        return LockHolder(host=str(data["host"]), pid=int(data["pid"]),
                          command=str(data["command"]), started=str(data["started"]))
    except (ValueError, KeyError, TypeError):
        return None


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _write_fd(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode(), 0)
    os.fsync(fd)


def _holder_of_locked(path: Path) -> LockHolder | None:
    """The holder named in a file another process has locked; it may have locked the file a
    moment ago and not written itself yet, so read again for up to `READ_HOLDER_SECONDS`."""
    deadline = time.monotonic() + READ_HOLDER_SECONDS
    while True:
        try:
            holder = parse_holder(path.read_text())
        except OSError:
            holder = None
        if holder is not None or time.monotonic() > deadline:
            return holder
        time.sleep(0.05)


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike, what: str, *,
                echo: Callable[[str], None] = _warn) -> Iterator[LockHolder]:
    """Hold the exclusive lock `path` while the body writes `what` (words for the message,
    e.g. `grid paper_1a2b3c4d in runs`); yields this process's `LockHolder`.

    Raises `OutputLockedError` at once when a live process holds it. A file naming a holder
    that is gone is taken over, and `echo` says so. Locks are per open file, so a second
    `output_lock` of the same path in the same process is refused too."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            holder = _holder_of_locked(path)
            who = holder.describe() if holder else "another process (it has not named itself)"
            raise OutputLockedError(
                f"{what} is already being written by {who}; lock file {path}. Wait for it to "
                "finish (or stop it), or write elsewhere (another --out)") from None
        echo(f"warning: cannot lock {path} ({err.strerror}); writing {what} without a lock")
        yield LockHolder.this_process()
        return
    try:
        previous = parse_holder(_read_fd(fd))
        if previous is not None:
            echo(f"taking over the lock of {what} ({path}) from {previous.describe()}: that "
                 "process is gone (it ended without releasing the lock)")
        me = LockHolder.this_process()
        _write_fd(fd, json.dumps(dataclasses.asdict(me)) + "\n")
        yield me
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor releases the flock
