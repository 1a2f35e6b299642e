"""The Optuna side of a sweep: the storage, the queue of runs, claims, and dead workers.

Each run of a study's table and grids is one Optuna trial, enqueued with its run id as a
user attribute. Workers (processes here, or machines sharing a PostgreSQL storage) take
queued trials; Optuna moves a trial from WAITING to RUNNING in one guarded update (on
SQLite once every transaction takes the write lock at its start), so two workers never
take the same trial. Two workers that start together may both enqueue the
same run, so a claimed trial runs only if it is the run's canonical trial: no other trial
of the run has completed, and none numbered below it is waiting or running.

A worker that dies leaves its trial RUNNING. On this host a dead process id tells at once
(an immediate rerun after kill -9 resumes); on other hosts Optuna's heartbeat does, after
a grace period. Either way the trial is failed and a copy is queued again.

A search block is an Optuna study of its own, sampled by TPE, whose budget admits the
first ``trials`` trials by number that did not fail.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from cxrlab.core.errors import CxrlabError

RUN_ID = "run_id"
CLAIM = "claimed_by"
ERROR = "error"
# A live worker records a heartbeat every HEARTBEAT_S; a trial silent for GRACE_S is taken
# as dead. Long enough for a busy 2-core machine, short against runs of many minutes.
HEARTBEAT_S = 30
GRACE_S = 180
LIVE = (TrialState.WAITING, TrialState.RUNNING)
HOST = socket.gethostname()

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class Ledger:
    """One Optuna study and its storage: which runs are queued, running, done or failed."""

    study: optuna.Study
    storage: RDBStorage
    study_id: int


@dataclass
class Claim:
    """A trial this worker holds: RUNNING, with this host and process recorded on it."""

    ledger: Ledger
    trial_id: int
    number: int
    run_id: str | None  # None for search trials (their ids follow the sampled values)
    params: dict[str, Any]
    system_attrs: dict[str, Any]


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


def open_storage(url: str) -> RDBStorage:
    """An Optuna RDB storage with heartbeats on; retried a few times because workers that
    start together race to create the tables."""
    import sqlalchemy.exc

    engine_kwargs: dict[str, Any] = (
        {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    )
    last: Exception | None = None
    for attempt in range(5):
        try:
            with _quiet():
                storage = RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(),
                )
            if url.startswith("sqlite"):
                _lock_sqlite_transactions(storage.engine)
            return storage
        except (ImportError, sqlalchemy.exc.NoSuchModuleError, sqlalchemy.exc.ArgumentError) as exc:
            hint = " (pip install 'cxrlab[postgres]')" if "postgres" in url else ""
            raise CxrlabError(f"--storage {shown_url(url)}: {str(exc).splitlines()[0]}{hint}") from exc
        except (
            sqlalchemy.exc.IntegrityError,
            sqlalchemy.exc.OperationalError,
            sqlalchemy.exc.ProgrammingError,
            optuna.exceptions.StorageInternalError,
        ) as exc:
            last = exc
            time.sleep(0.5 + attempt)
    raise CxrlabError(f"cannot open the study storage {shown_url(url)}: {str(last).splitlines()[0]}")


def open_ledger(storage: RDBStorage, name: str, sampler: optuna.samplers.BaseSampler | None = None) -> Ledger:
    """The Optuna study ``name`` in ``storage``, made on first use (minimising validation loss)."""
    study = optuna.create_study(
        study_name=name, storage=storage, direction="minimize", load_if_exists=True, sampler=sampler
    )
    return Ledger(study, storage, storage.get_study_id_from_name(name))


def trials_of(ledger: Ledger, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
    """The trials of ``ledger`` (in ``states``), read fresh from the storage, by number."""
    return ledger.storage.get_all_trials(ledger.study_id, deepcopy=False, states=states)


def trials_by_run(ledger: Ledger) -> dict[str, list[FrozenTrial]]:
    by_run: dict[str, list[FrozenTrial]] = {}
    for trial in trials_of(ledger):
        if RUN_ID in trial.user_attrs:
            by_run.setdefault(trial.user_attrs[RUN_ID], []).append(trial)
    return by_run


def enqueue_missing(ledger: Ledger, run_ids: list[str]) -> int:
    """Queue every run that has no completed, waiting or running trial; returns how many."""
    by_run = trials_by_run(ledger)
    queued = 0
    for run_id in run_ids:
        states = {t.state for t in by_run.get(run_id, [])}
        if states & {TrialState.COMPLETE, *LIVE}:
            continue
        ledger.study.enqueue_trial({}, user_attrs={RUN_ID: run_id})
        queued += 1
    return queued


def claim_queued(ledger: Ledger, run_ids: set[str]) -> Claim | None:
    """Take the first waiting trial of one of ``run_ids`` that is the run's canonical trial;
    duplicates met on the way are pruned. None when no such trial is waiting."""
    for waiting in trials_of(ledger, (TrialState.WAITING,)):
        run_id = waiting.user_attrs.get(RUN_ID)
        if run_id not in run_ids:
            continue  # queued by another version of the study file; not ours to run
        claim = _take(ledger, waiting, run_id)
        if claim is None:
            continue
        if _is_duplicate(ledger, claim):
            ledger.storage.set_trial_user_attr(claim.trial_id, "duplicate", True)
            ledger.storage.set_trial_state_values(claim.trial_id, TrialState.PRUNED)
            continue
        return claim
    return None


def claim_search_trial(ledger: Ledger, budget: int, distributions: dict[str, BaseDistribution]) -> Claim | None:
    """A new TPE trial (or a queued retry of a dead one) within the budget; None when full."""
    counted = trials_of(ledger, (TrialState.COMPLETE, *LIVE))
    if len(counted) >= budget and not any(t.state == TrialState.WAITING for t in counted):
        return None
    with _quiet():
        trial = ledger.study.ask(fixed_distributions=distributions)
    trial_id = ledger.storage.get_trial_id_from_study_id_trial_number(ledger.study_id, trial.number)
    _mark(ledger, trial_id, trial.number)
    # Budgets are exact across workers: trials are admitted in the order of their numbers.
    ahead = [t for t in trials_of(ledger, (TrialState.COMPLETE, *LIVE)) if t.number < trial.number]
    if len(ahead) >= budget:
        ledger.storage.set_trial_state_values(trial_id, TrialState.PRUNED)
        return None
    frozen = ledger.storage.get_trial(trial_id)
    return Claim(ledger, trial_id, trial.number, None, dict(trial.params), dict(frozen.system_attrs))


def count_states(ledger: Ledger) -> dict[TrialState, int]:
    counts: dict[TrialState, int] = {}
    for trial in trials_of(ledger):
        counts[trial.state] = counts.get(trial.state, 0) + 1
    return counts


def finish(claim: Claim, value: float, **attrs: Any) -> None:
    """Complete a claimed trial with its objective (validation loss; inf for a diverged run)."""
    ledger = claim.ledger
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        for key, item in attrs.items():
            ledger.storage.set_trial_user_attr(claim.trial_id, key, item)
        ledger.study.tell(claim.number, value, skip_if_finished=True)


def fail(claim: Claim, message: str) -> None:
    """Fail a claimed trial whose run raised; the next sweep command queues it again."""
    ledger = claim.ledger
    with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
        ledger.storage.set_trial_user_attr(claim.trial_id, ERROR, message[:500])
        ledger.study.tell(claim.number, state=TrialState.FAIL, skip_if_finished=True)


def fail_dead_trials(ledger: Ledger) -> int:
    """Fail the RUNNING trials whose worker is gone, and queue a copy of each.

    Dead here: the claim names this host and a process that no longer runs. Never claimed:
    taken more than GRACE_S ago by a worker that died before it wrote its claim. (These two
    are counted in the return value.) Dead elsewhere: no heartbeat for GRACE_S (Optuna's
    stale-trial check, which queues the copy itself)."""
    failed = 0
    for trial in trials_of(ledger, (TrialState.RUNNING,)):
        claim = trial.user_attrs.get(CLAIM)
        if claim and claim.get("trial") == trial.number:
            if claim.get("host") != HOST or _alive(int(claim["pid"])):
                continue
        elif trial.datetime_start is None or (datetime.now() - trial.datetime_start).total_seconds() < GRACE_S:
            continue
        trial_id = ledger.storage.get_trial_id_from_study_id_trial_number(ledger.study_id, trial.number)
        try:
            won = ledger.storage.set_trial_state_values(trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            won = False
        if won:  # only the process that failed it queues the copy
            with _quiet():
                RetryHeartbeatStaleTrialCallback()(ledger.study, ledger.storage.get_trial(trial_id))
            failed += 1
    with _quiet():
        fail_stale_trials(ledger.study)
    return failed


@contextlib.contextmanager
def heartbeat(claim: Claim) -> Iterator[None]:
    """Record a heartbeat for the claimed trial every HEARTBEAT_S while the block runs."""
    storage = claim.ledger.storage
    stop = threading.Event()

    def beat() -> None:
        while True:
            with contextlib.suppress(Exception):  # a missed beat is retried; the run goes on
                storage.record_heartbeat(claim.trial_id)
            if stop.wait(HEARTBEAT_S):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat-{claim.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def retried_from(claim: Claim) -> int:
    """The number of the first trial this one retries (its own number when it is no retry)."""
    return int(claim.system_attrs.get("failed_trial", claim.number))


# --- pieces -------------------------------------------------------------------------------


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


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Heartbeats and stale-trial retries are marked experimental, and ask() warns that a
    # heartbeat expects Study.optimize, which a queue of runs does not use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
        yield


def _take(ledger: Ledger, waiting: FrozenTrial, run_id: str) -> Claim | None:
    trial_id = ledger.storage.get_trial_id_from_study_id_trial_number(ledger.study_id, waiting.number)
    try:
        # The atomic step: WAITING -> RUNNING succeeds for one worker only.
        if not ledger.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
            return None
    except optuna.exceptions.UpdateFinishedTrialError:
        return None
    _mark(ledger, trial_id, waiting.number)
    return Claim(ledger, trial_id, waiting.number, run_id, dict(waiting.params), dict(waiting.system_attrs))


def _mark(ledger: Ledger, trial_id: int, number: int) -> None:
    # The heartbeat first: from here on a worker that dies is found, by its claim or its
    # silence. The trial number is part of the claim: a queued copy of a dead trial inherits
    # the user attributes, and must not be mistaken for a dead claim of its own.
    ledger.storage.record_heartbeat(trial_id)
    ledger.storage.set_trial_user_attr(
        trial_id, CLAIM, {"host": HOST, "pid": os.getpid(), "trial": number, "time": time.time()}
    )


def _is_duplicate(ledger: Ledger, claim: Claim) -> bool:
    for other in trials_by_run(ledger).get(claim.run_id, []):
        if other.number == claim.number:
            continue
        if other.state == TrialState.COMPLETE or (other.number < claim.number and other.state in LIVE):
            return True
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed child not yet reaped is a zombie: it answers signals but runs nothing.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")
