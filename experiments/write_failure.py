"""A write that fails for lack of room: a full disk, a quota or a file-size limit (RLIMIT_FSIZE).

Such a failure reaches us as `OSError` errno ENOSPC / EDQUOT / EFBIG without a file name (the
`write` call knows only a descriptor), or, from orbax's tensorstore, as a `ValueError` whose text
carries `os_error_code=...`. `OutputWriteError` says which file or folder could not be written
and what was kept; the checkpoint, prediction and tables writers raise it."""

from __future__ import annotations

import errno
import os
import re

#: errno values that mean "no room to write this".
NO_ROOM_ERRNOS = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})

_TENSORSTORE_ERRNO = re.compile(r"os_error_code='?(\d+)")


class OutputWriteError(OSError):
    """A file or folder could not be written (no room); the message names it and what was
    kept."""


def no_room_errno(err: BaseException) -> int | None:
    """ENOSPC / EDQUOT / EFBIG when `err` (or what it was raised from) is a failure for lack of
    room, else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_ROOM_ERRNOS:
            return err.errno
        match = _TENSORSTORE_ERRNO.search(str(err)) if isinstance(err, ValueError) else None
        if match and int(match.group(1)) in NO_ROOM_ERRNOS:
            return int(match.group(1))
        err = err.__cause__ or err.__context__
    return None


def no_room_reason(code: int) -> str:
    """`No space left on device (a full disk, a quota or a file size limit)`."""
    return f"{os.strerror(code)} (a full disk, a quota or a file size limit)"
