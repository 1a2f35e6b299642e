"""Where a sweep keeps its bookkeeping: an Optuna RDB storage, SQLite in the study directory
by default, or a server that workers on several machines share.

``postgresql://user:password@host:port/db`` is the form people type. SQLAlchemy maps it to
one driver (psycopg 3 since SQLAlchemy 2.1, psycopg2 before), so the URL is pointed at a
driver that is installed here: psycopg 3 (the ``postgres`` extra), else psycopg2. A URL
that names its driver (``postgresql+psycopg2://``) is used as given, and a missing driver
is one line naming the package to install.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any

# The PostgreSQL drivers SQLAlchemy knows, in order of preference, with their packages.
POSTGRES_DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary"}
# A live worker records a heartbeat every HEARTBEAT_S; a trial silent for GRACE_S is taken
# as dead. Long enough for a busy 2-core machine, short against runs of many minutes.
HEARTBEAT_S = 30
GRACE_S = 180


def default_storage_url(study_dir: Path) -> str:
    """The embedded default: a SQLite file in the study directory."""
    return f"sqlite:///{(Path(study_dir) / 'study.db').resolve()}"


def shown_url(url: str) -> str:
    """``url`` without its password, for logs and records."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def storage_url(url: str) -> str:
    """``url`` with a PostgreSQL driver that is installed here; other URLs as given."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from cxrlab.core.errors import CxrlabError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise CxrlabError(
            f"--storage {url}: not a database URL: give e.g. postgresql://user:password@host:5432/db "
            "or sqlite:///path/study.db"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    if backend not in ("postgresql", "postgres"):
        return url
    if driver:
        if driver in POSTGRES_DRIVERS and not _importable(driver):
            raise CxrlabError(
                f"--storage {shown_url(url)}: the {driver} driver is not installed: pip install '{POSTGRES_DRIVERS[driver]}'"
            )
    else:
        driver = next((name for name in POSTGRES_DRIVERS if _importable(name)), "")
        if not driver:
            raise CxrlabError(
                f"--storage {shown_url(url)}: no PostgreSQL driver is installed: pip install 'psycopg[binary]' "
                "(or pip install 'cxrlab[postgres]')"
            )
    return parsed.set(drivername=f"postgresql+{driver}").render_as_string(hide_password=False)


def open_storage(url: str):
    """An Optuna RDB storage with heartbeats on; retried a few times because workers that
    start together race to create the tables."""
    import optuna
    import sqlalchemy.exc
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    from cxrlab.core.errors import CxrlabError
    from cxrlab.study.quiet import quiet

    url = storage_url(url)
    sqlite = url.startswith("sqlite")
    engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if sqlite else {"pool_pre_ping": True}
    last: Exception | None = None
    for attempt in range(5):
        try:
            with quiet():
                storage = RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
                )
            if sqlite:
                _lock_sqlite_transactions(storage.engine)
            return storage
        except (ImportError, sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError) as exc:
            raise CxrlabError(f"--storage {shown_url(url)}: {str(exc).splitlines()[0]}") from exc
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.ProgrammingError,
            optuna.exceptions.StorageInternalError,
        ) as exc:
            last = exc
            time.sleep(0.5 + attempt)
    reason = str(getattr(last, "orig", None) or last).strip().splitlines()
    raise CxrlabError(f"cannot open the study storage {shown_url(url)}: {reason[0] if reason else last}")


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _lock_sqlite_transactions(engine) -> None:
    """Make SQLite claims atomic. Optuna moves a trial from WAITING to RUNNING by reading it
    with SELECT ... FOR UPDATE and then updating it; SQLite ignores FOR UPDATE, and Python's
    sqlite3 opens a transaction only at the first write, so two processes could both read
    WAITING and both take the trial. Every transaction takes SQLite's write lock at BEGIN
    instead: the read and the update of a claim are one step."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _driver_leaves_transactions_to_us(dbapi_connection, record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections pooled while the tables were made predate the hooks
