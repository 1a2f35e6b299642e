"""User-facing errors.

A ``CxrlabError`` is bad input the user can fix: the command line prints its message on
one line and exits with code 2, no traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import ValidationError


class CxrlabError(Exception):
    """Bad input: a one-line message that names the thing that is wrong and what to do."""

    exit_code = 2


class BadImageError(CxrlabError):
    """An image file that cannot be decoded."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read image {path}: {reason} (remove the file or pass --on-bad-image skip)")


def setting_error(exc: ValidationError, prefix: str = "", known: Iterable[str] = ()) -> str:
    """The first problem of a pydantic validation as one line: ``{prefix}{key}: {message}
    (got {value})``. An unknown key is named with the closest of ``known``. A ``prefix``
    ending in ``--`` writes the key as a command-line option (``--weight-decay``)."""
    error = exc.errors()[0]
    if not error["loc"]:  # a rule across settings: its message names them
        return error["msg"].removeprefix("Value error, ")
    where = ""
    for part in error["loc"]:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    where = where or "value"
    if prefix.endswith("--"):
        where = where.replace("_", "-")
    if error["type"] == "extra_forbidden":
        known = list(known)
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        shown = f" (known: {', '.join(known)})" if 0 < len(known) <= 12 else ""
        return f"{prefix}{where}: unknown setting {str(error['loc'][-1])!r}{hint}{shown}"
    if error["type"] == "missing":
        return f"{prefix}{where}: missing: add it"
    message = error["msg"].removeprefix("Value error, ")
    got = repr(error.get("input"))
    return f"{prefix}{where}: {message} (got {got if len(got) <= 80 else got[:77] + '...'})"


class StorageError(CxrlabError, OSError):
    """A folder or disk that cannot take a write: full, read-only or not ours. Bad input (the
    user chose the folder), and still an ``OSError`` for code that catches those."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno
