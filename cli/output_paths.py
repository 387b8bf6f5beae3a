"""Output paths checked before a command writes anything: a file where a folder is expected
(or a folder where a file is), here or in a parent, is one clear error and nothing is changed.

The commands call these on their output options (`--out`, `--storage`) and on the fixed paths
they create inside them (`<out>/mlflow.db`, `<out>/trials/`, ...) before any other work."""

from __future__ import annotations

import os
from pathlib import Path


class OutputPathError(ValueError):
    """An output path exists as the wrong kind (file vs folder); names the option and path."""


def _blocking_file(path: Path) -> Path | None:
    """The first of `path` and its parents that exists and is not a folder, looking upwards
    only until the first existing folder (which can hold what is missing below it)."""
    for candidate in (path, *path.parents):
        if candidate.is_dir():
            return None
        if candidate.exists() or candidate.is_symlink():
            return candidate
    return None


def check_output_folder(path: str | os.PathLike, what: str) -> Path:
    """`path` as a `Path` when it is a folder or can be created as one; else `OutputPathError`
    (`what` names the option, e.g. `--out`)."""
    path = Path(path)
    blocking = _blocking_file(path)
    if blocking == path:
        raise OutputPathError(f"{what} {path} is a file, not a folder; nothing was written "
                              f"(give a folder, or move the file away)")
    if blocking is not None:
        raise OutputPathError(f"{what} {path}: {blocking} is a file, not a folder; nothing "
                              "was written")
    return path


def check_output_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a `Path` when it is a file or can be created as one (its folder may be made);
    else `OutputPathError`."""
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"{what} {path} is a folder, not a file; nothing was written")
    blocking = _blocking_file(path.parent)
    if blocking is not None:
        raise OutputPathError(f"{what} {path}: {blocking} is a file, not a folder; nothing "
                              "was written")
    return path
