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
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from cxrlab.study.quiet import optuna_warnings_only, quiet
from cxrlab.study.storage import GRACE_S, HEARTBEAT_S

RUN_ID = "run_id"
CLAIM = "claimed_by"
ERROR = "error"
PLAN = "cxrlab_plan"  # the study's user attribute that holds the plan its workers agree on
# A study attribute "lost_trial:N" marks completed trial N whose run directory was deleted:
# it no longer counts (completed trials cannot be changed, their study can).
LOST = "lost_trial:"
LIVE = (TrialState.WAITING, TrialState.RUNNING)
HOST = socket.gethostname()


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


def open_ledger(storage: RDBStorage, name: str, sampler: optuna.samplers.BaseSampler | None = None) -> Ledger:
    """The Optuna study ``name`` in ``storage``, made on first use (minimising validation loss)."""
    with optuna_warnings_only():  # not Optuna's "Using an existing study" for every worker
        study = optuna.create_study(
            study_name=name, storage=storage, direction="minimize", load_if_exists=True, sampler=sampler
        )
    return Ledger(study, storage, storage.get_study_id_from_name(name))


def trials_of(ledger: Ledger, states: tuple[TrialState, ...] | None = None) -> list[FrozenTrial]:
    """The trials of ``ledger`` (in ``states``), read fresh from the storage, by number;
    lost trials (see ``mark_lost``) are left out."""
    lost = {key for key in ledger.storage.get_study_user_attrs(ledger.study_id) if key.startswith(LOST)}
    found = ledger.storage.get_all_trials(ledger.study_id, deepcopy=False, states=states)
    return [t for t in found if f"{LOST}{t.number}" not in lost] if lost else found


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
        if any(counts(t) for t in by_run.get(run_id, [])):
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
    with quiet():
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
    found: dict[TrialState, int] = {}
    for trial in trials_of(ledger):
        found[trial.state] = found.get(trial.state, 0) + 1
    return found


def counts(trial: FrozenTrial) -> bool:
    """Whether a trial holds its run's place: done, queued or running."""
    return trial.state in (TrialState.COMPLETE, *LIVE)


def mark_lost(ledger: Ledger, trial: FrozenTrial) -> None:
    """A completed trial whose run directories are gone no longer counts, and its runs are
    done again: queued runs by ``enqueue_missing``, a search trial as a copy with the same
    parameters and number (so that its runs keep their ids)."""
    ledger.storage.set_study_user_attr(ledger.study_id, f"{LOST}{trial.number}", True)
    if RUN_ID in trial.user_attrs:
        return
    from optuna.trial import create_trial

    copy = create_trial(
        state=TrialState.WAITING,
        params=trial.params,
        distributions=trial.distributions,
        system_attrs={"failed_trial": retried_from_trial(trial)},
    )
    ledger.study.add_trial(copy)


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
            with quiet():
                RetryHeartbeatStaleTrialCallback()(ledger.study, ledger.storage.get_trial(trial_id))
            failed += 1
    with quiet():
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


def agreed_plan(ledger: Ledger, plan: dict) -> dict:
    """The plan the study's workers agree on: ``plan`` if this worker is the first to record
    one, else the one recorded. The first insert of the attribute wins (the storage's unique
    key on study and attribute name), so two workers that start together cannot both win."""
    from sqlalchemy import MetaData, Table, insert
    from sqlalchemy.exc import IntegrityError

    recorded = ledger.storage.get_study_user_attrs(ledger.study_id)
    if PLAN not in recorded:
        table = Table("study_user_attributes", MetaData(), autoload_with=ledger.storage.engine)
        with contextlib.suppress(IntegrityError), ledger.storage.engine.begin() as connection:
            connection.execute(insert(table).values(study_id=ledger.study_id, key=PLAN, value_json=json.dumps(plan)))
        recorded = ledger.storage.get_study_user_attrs(ledger.study_id)
    return recorded[PLAN]


def record_settings(claim: Claim, params: dict[str, tuple[Any, BaseDistribution]], attrs: dict[str, Any]) -> None:
    """Show a queued run's settings on its trial: as parameters (optuna-dashboard plots
    them against the objective) and user attributes. A parameter Optuna cannot take (a
    distribution another version of the study recorded differently) is left out."""
    storage = claim.ledger.storage
    for name, (value, distribution) in params.items():
        with contextlib.suppress(ValueError, optuna.exceptions.UpdateFinishedTrialError):
            storage.set_trial_param(claim.trial_id, name, distribution.to_internal_repr(value), distribution)
    for key, value in attrs.items():
        storage.set_trial_user_attr(claim.trial_id, key, value)


def retried_from(claim: Claim) -> int:
    """The number of the first trial this one retries (its own number when it is no retry)."""
    return int(claim.system_attrs.get("failed_trial", claim.number))


def retried_from_trial(trial: FrozenTrial) -> int:
    return int(trial.system_attrs.get("failed_trial", trial.number))


# --- pieces -------------------------------------------------------------------------------


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
    for other in trials_by_run(ledger).get(claim.run_id or "", []):
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
