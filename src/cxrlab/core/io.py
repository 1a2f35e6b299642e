"""Atomic file writes and inter-process locks.

Every record cxrlab leaves on disk is written to a temporary name in the same folder and
renamed into place, so a reader sees either the old file or the complete new one, never
half of one; a killed process leaves at most a stray ``.tmp`` file. A write that fails
because the disk is full or the folder is read-only removes its temporary file and raises a
``StorageError`` (one line naming the file), not a traceback.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock

from cxrlab.core.errors import CxrlabError, StorageError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()

# Errors that say the place cannot take the write, not that cxrlab is wrong: the disk or the
# quota is full, the file would pass the size limit, the folder is read-only or not ours.
FULL = frozenset({errno_codes.ENOSPC, errno_codes.EDQUOT, errno_codes.EFBIG})
REFUSED = frozenset({errno_codes.EROFS, errno_codes.EACCES, errno_codes.EPERM})


def storage_error(path: str | os.PathLike, exc: OSError, doing: str = "write") -> StorageError:
    """One line for a write the place refused: what, where, and what to do."""
    reason = exc.strerror or str(exc)
    if exc.errno in FULL:
        hint = "free some space or choose another folder"
    else:
        hint = "the folder is read-only or not yours: choose another folder (--out, --cache-dir)"
    return StorageError(f"cannot {doing} {path}: {reason}; {hint}", exc.errno)


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and not isinstance(exc, StorageError) and exc.errno in FULL | REFUSED


def make_dir(path: str | os.PathLike) -> Path:
    """``mkdir -p path``; a read-only or full place is a ``StorageError``."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise CxrlabError(f"cannot make folder {path}: a file of that name is in the way") from exc
    except OSError as exc:
        if exc.errno == errno_codes.ENOTDIR:
            raise CxrlabError(f"cannot make folder {path}: a file in its path is not a folder") from exc
        if is_storage_error(exc):
            raise storage_error(path, exc, "make folder") from exc
        raise
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds."""
    path = Path(path)
    make_dir(path.parent)
    if path.is_dir():
        raise CxrlabError(f"cannot write {path}: a folder of that name is in the way")
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        if is_storage_error(exc):
            raise storage_error(path, exc) from exc
        raise
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        # mkstemp makes the file private (0600); records are ordinary files, readable as the
        # umask allows, like any file the user's tools would write.
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except OSError as exc:
        if is_storage_error(exc):
            raise storage_error(path, exc) from exc
        raise
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Strict JSON: an undefined number (an AUC with one class present) is written as null."""
    text = json.dumps(_finite(data), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    write_text(path, text + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):  # numpy float64 is a float too
        return float(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_yaml(path: str | os.PathLike, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def read_record_json(path: str | os.PathLike) -> Any:
    """A JSON record cxrlab wrote; a truncated, hand-broken or non-UTF-8 file is one line."""
    try:
        return read_json(path)
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise CxrlabError(f"{path} is damaged (not JSON: {str(exc).splitlines()[0][:120]}): rerun the run") from exc
    except OSError as exc:
        raise CxrlabError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_yaml(path: str | os.PathLike) -> Any:
    """The plain data of a YAML file; tags that would build Python objects, text that is not
    UTF-8 and alias bombs are refused (``cxrlab.core.yamlload``)."""
    from cxrlab.core.yamlload import load, read_text

    return load(read_text(path), str(path))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float = -1) -> Iterator[FileLock]:
    """A lock file beside ``path`` that serialises processes building the same file."""
    path = Path(path)
    make_dir(path.parent)
    lock = FileLock(str(path) + ".lock", timeout=timeout)
    try:
        lock.acquire()
    except OSError as exc:
        if is_storage_error(exc):
            raise storage_error(str(path) + ".lock", exc) from exc
        raise
    try:
        yield lock
    finally:
        lock.release()


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
