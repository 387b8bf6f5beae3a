"""A command's output folder written all or nothing: files go to a staging folder beside it and
are moved in (one `os.replace` each, no new room needed) only when every one was written.

So a full disk or a file-size limit half way (`experiments.write_failure`) leaves the folder's
earlier outputs as they were and raises `OutputWriteError` naming the file that could not be
written. That file is known from Python's audit event `open` (every `open()` of a writer, from
`Path.write_text`, pandas or matplotlib): a failed `write()` itself names no file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from diffseg3d.experiments.write_failure import OutputWriteError, no_room_errno, no_room_reason

#: (staging folder, paths opened for writing below it) of every `staged_folder` now open.
_ACTIVE: list[tuple[str, list[str]]] = []
_HOOKED = False


def _writing(mode, flags) -> bool:
    if isinstance(mode, str):
        return any(c in mode for c in "wax+")
    return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR))


def _audit(event: str, args: tuple) -> None:
    if event != "open" or not _ACTIVE:
        return
    path, mode, flags = args
    if isinstance(path, int) or path is None or not _writing(mode, flags):
        return
    text = os.path.abspath(os.fsdecode(path))
    for root, opened in _ACTIVE:
        if text.startswith(root + os.sep):
            opened.append(text)


def _hook() -> None:
    global _HOOKED
    if not _HOOKED:  # an audit hook cannot be removed: one, idle outside `staged_folder`
        sys.addaudithook(_audit)
        _HOOKED = True


def _targets(staging: Path, out: Path) -> list[tuple[Path, Path]]:
    """(staged file, its place in `out`) for every staged file; a place that is a folder is an
    `OutputWriteError` before anything moves."""
    pairs = [(f, out / f.relative_to(staging)) for f in sorted(staging.rglob("*"))
             if not f.is_dir()]
    for _, target in pairs:
        if target.is_dir():
            raise OutputWriteError(f"cannot write {target}: a folder is in its place; {out} "
                                   "is unchanged")
    return pairs


@contextlib.contextmanager
def staged_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh staging folder (`.<out name>.partial-<pid>` beside `out`); when the body
    returns, move its files into `out` (created if absent; other files of `out` stay). The
    staging folder is removed in every case; when the body fails for lack of room nothing of
    `out` has changed and `OutputWriteError` names the file."""
    out = Path(out)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    _hook()
    entry = (os.path.abspath(staging), [])
    _ACTIVE.append(entry)
    try:
        try:
            yield staging
        except (OSError, ValueError) as err:
            code = no_room_errno(err)
            if code is None:
                raise
            failed = Path(entry[1][-1]) if entry[1] else None
            where = out / failed.relative_to(entry[0]) if failed else out
            raise OutputWriteError(f"cannot write {where}: {no_room_reason(code)}; {out} is "
                                   "unchanged (nothing of this run was moved into it)") from None
        finally:
            _ACTIVE.remove(entry)
        for source, target in _targets(staging, out):
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
