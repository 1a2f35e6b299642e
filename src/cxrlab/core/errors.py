"""User-facing errors.

A ``CxrlabError`` is bad input the user can fix: the command line prints its message on
one line and exits with code 2, no traceback. Anything else is a bug and keeps its
traceback.
"""


class CxrlabError(Exception):
    """Bad input: a one-line message that names the thing that is wrong and what to do."""

    exit_code = 2


class BadImageError(CxrlabError):
    """An image file that cannot be decoded."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot read image {path}: {reason} (remove the file or pass --on-bad-image skip)")


class StorageError(CxrlabError, OSError):
    """A folder or disk that cannot take a write: full, read-only or not ours. Bad input (the
    user chose the folder), and still an ``OSError`` for code that catches those."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno
