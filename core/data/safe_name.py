"""Names that become part of a path: one validation for every entry point.

Data set names, case ids, config and grid names and profile names all end up as a folder or file
name under the user's `--out` (checkpoints, predictions, montages). A name taken from a file the
user did not write (a downloaded `dataset.json`) must not steer a write outside that folder, so
every such name is checked here before it is used.
"""

from __future__ import annotations

import re

#: Longest accepted name, in characters: well under the 255-byte file-name limit of common file
#: systems, leaving room for the suffixes the project appends (`_<hash>`, `.nii.gz`, `_entropy`).
MAX_NAME_LENGTH = 128

# Letters, digits and `._+-=` (the trial names use `=`-free but `+`/`-`); no separators, no spaces.
_ALLOWED = re.compile(r"^[A-Za-z0-9._+\-=]+$")


class UnsafeNameError(ValueError):
    """A name would leave its folder or is unusable as a file name; the message says why."""


def check_safe_name(name: object, *, what: str = "name") -> str:
    """Return `name` unchanged if it is a safe single path component, else raise.

    Safe: a non-empty `str` of at most `MAX_NAME_LENGTH` characters from `[A-Za-z0-9._+-=]`
    (so no `/`, `\\`, spaces or control characters), not starting with `.` (no `..`, no hidden
    files) and not containing `..`. `what` names the value in the message
    (e.g. "dataset.json key 'name'").
    """
    if not isinstance(name, str):
        raise UnsafeNameError(f"{what} must be a string, got {type(name).__name__} {name!r}")
    if not name:
        raise UnsafeNameError(f"{what} is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise UnsafeNameError(
            f"{what} {name[:40]!r}... is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
        )
    if name.startswith(".") or ".." in name:
        raise UnsafeNameError(f"{what} {name!r} must not start with '.' or contain '..'")
    if not _ALLOWED.match(name):
        bad = sorted({c for c in name if not _ALLOWED.match(c)})
        raise UnsafeNameError(
            f"{what} {name!r} contains {''.join(bad)!r}: use letters, digits and . _ + - = only "
            "(no path separators or spaces)"
        )
    return name
