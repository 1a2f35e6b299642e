"""One writer per run directory.

A run directory is claimed before anything is written into it, and held for the run's life:

* an exclusive ``flock`` on the directory itself, which the kernel drops when the process
  ends however it ends (``kill -9`` included), so two processes can never both hold it;
* ``owner.json`` beside the records, naming the pid, the host and the process start time,
  its modification time refreshed every ``HEARTBEAT_S`` seconds: what a refused process
  is told, and what guards a directory shared between hosts where a lock may not reach.

A second process is refused with one line naming the pid and host that own the directory.
An owner that is gone may be taken over: the lock is free and ``owner.json`` names a dead
process on this host (or a live pid that is another process: its start time differs), or
an owner on another host whose heartbeat is older than ``STALE_S``. The claim ends with the
run: ``owner.json`` is removed and the lock dropped.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import make_dir, write_json

try:  # POSIX; elsewhere owner.json alone guards the directory
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

OWNER = "owner.json"
HEARTBEAT_S = 30.0
# An owner on another host silent this long is taken as dead: ten missed heartbeats.
STALE_S = 300.0
HOST = socket.gethostname()


class RunDirBusy(CxrlabError):
    """Another live process writes this run directory."""


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (Linux); None where unknown.
    A pid reused by another process has another start time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return stat.rsplit(")", 1)[-1].split()[19]


def pid_alive(pid: int, started: str | None = None) -> bool:
    """Whether ``pid`` runs on this host (and is the process that started at ``started``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    except (OverflowError, ValueError):
        return False
    now = process_start(pid)
    return started is None or now is None or now == started


def read_owner(path: Path) -> dict | None:
    """``owner.json`` of run directory ``path`` with its heartbeat (the file's time); None when
    there is none or it cannot be read (a torn owner file is no claim)."""
    owner_path = Path(path) / OWNER
    try:
        owner = json.loads(owner_path.read_text(encoding="utf-8"))
        heartbeat = owner_path.stat().st_mtime
    except (OSError, ValueError):
        return None
    if not isinstance(owner, dict) or not isinstance(owner.get("pid"), int):
        return None
    owner["heartbeat"] = max(float(owner.get("time") or 0.0), heartbeat)
    return owner


def owner_is_live(owner: dict) -> bool:
    if owner.get("host") == HOST:
        if owner["pid"] == os.getpid():
            # This process, not holding the directory now (the lock said so): a claim left
            # by an earlier run in this process that ended without releasing it.
            return False
        return pid_alive(owner["pid"], owner.get("process_start"))
    return time.time() - owner["heartbeat"] < STALE_S


def describe_owner(path: Path, owner: dict | None) -> str:
    if owner is None:
        return f"run directory {path} is being written by another process: wait for it to finish"
    ago = max(0, round(time.time() - owner["heartbeat"]))
    return (
        f"run directory {path} is being written by pid {owner['pid']} on host {owner.get('host')} "
        f"(last heard {ago} s ago): wait for it to finish, or stop that process"
    )


class RunClaim:
    """A held claim on a run directory: release it (or leave the ``with`` block) when the run ends."""

    def __init__(self, path: Path, fd: int | None):
        self.path = path
        self._fd = fd
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="cxrlab-run-heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path / OWNER)

    def release(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        owner = read_owner(self.path)
        if owner is not None and owner["pid"] == os.getpid() and owner.get("host") == HOST:
            with contextlib.suppress(OSError):
                (self.path / OWNER).unlink()
        if self._fd is not None:
            os.close(self._fd)  # drops the lock
            self._fd = None

    def __enter__(self) -> RunClaim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_run_dir(path: str | os.PathLike) -> RunClaim:
    """Claim run directory ``path`` (made if missing) for this process, or raise ``RunDirBusy``."""
    path = make_dir(path)
    fd = _lock(path)
    try:
        owner = read_owner(path)
        if owner is not None and owner_is_live(owner):
            raise RunDirBusy(describe_owner(path, owner))
        write_json(
            path / OWNER,
            {"pid": os.getpid(), "host": HOST, "process_start": process_start(os.getpid()), "time": time.time()},
        )
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    return RunClaim(path, fd)


def _lock(path: Path) -> int | None:
    """An exclusive lock on the directory, held by the returned descriptor; None where the
    file system has no locks (owner.json alone then guards it)."""
    if fcntl is None:  # pragma: no cover - Windows
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirBusy(describe_owner(path, _owner_soon(path))) from None
    except OSError:
        return fd  # no locks on this file system (ENOLCK, EOPNOTSUPP): owner.json decides
    return fd


def _owner_soon(path: Path) -> dict | None:
    """The owner of a held lock: it writes owner.json right after taking the lock, so give it a moment."""
    for _ in range(20):
        owner = read_owner(path)
        if owner is not None:
            return owner
        time.sleep(0.05)
    return None
