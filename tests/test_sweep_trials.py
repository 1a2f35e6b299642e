"""The Optuna queue of a sweep: canonical trials against duplicate enqueues, and trials
left RUNNING by dead workers (a dead process here, a silent heartbeat elsewhere, a worker
that died before it wrote its claim) failed and queued again."""

from __future__ import annotations

import subprocess

import pytest
from optuna.trial import TrialState

from cxrlab.study import storage, trials
from cxrlab.study.storage import open_storage
from cxrlab.study.trials import (
    CLAIM,
    RUN_ID,
    claim_queued,
    enqueue_missing,
    fail_dead_trials,
    finish,
    open_ledger,
    trials_of,
)


@pytest.fixture
def ledger(tmp_path):
    return open_ledger(open_storage(f"sqlite:///{tmp_path / 'study.db'}"), "queue")


def states(ledger) -> list[tuple[str, str]]:
    return [(t.user_attrs.get(RUN_ID), t.state.name) for t in trials_of(ledger)]


def test_a_run_enqueued_twice_runs_once(ledger):
    # Two machines that start together both see run "a" missing and both queue it.
    assert enqueue_missing(ledger, ["a", "b"]) == 2
    ledger.study.enqueue_trial({}, user_attrs={RUN_ID: "a"})
    first = claim_queued(ledger, {"a", "b"})
    assert (first.number, first.run_id) == (0, "a")
    second = claim_queued(ledger, {"a", "b"})
    assert (second.number, second.run_id) == (1, "b")
    assert claim_queued(ledger, {"a", "b"}) is None, "the second trial of 'a' is a duplicate: pruned, not run"
    assert states(ledger) == [("a", "RUNNING"), ("b", "RUNNING"), ("a", "PRUNED")]
    finish(first, 0.5)
    finish(second, 0.7)
    assert enqueue_missing(ledger, ["a", "b"]) == 0, "completed runs are never queued again"


def test_a_trial_whose_process_died_here_is_failed_and_queued_again(ledger):
    enqueue_missing(ledger, ["a"])
    claim = claim_queued(ledger, {"a"})
    assert fail_dead_trials(ledger) == 0, "this process is alive"
    gone = subprocess.Popen(["true"])
    gone.wait()
    ledger.storage.set_trial_user_attr(
        claim.trial_id, CLAIM, {**trials_of(ledger)[0].user_attrs[CLAIM], "pid": gone.pid}
    )
    assert fail_dead_trials(ledger) == 1
    assert states(ledger) == [("a", "FAIL"), ("a", "WAITING")]
    retry = claim_queued(ledger, {"a"})
    assert retry.number == 1 and retry.system_attrs["failed_trial"] == 0
    # The copy inherited the dead claim, but its own claim is this live process.
    assert fail_dead_trials(ledger) == 0
    assert states(ledger) == [("a", "FAIL"), ("a", "RUNNING")]


def test_silent_and_unclaimed_trials_are_failed_after_the_grace_period(tmp_path, monkeypatch):
    import time

    for module in (trials, storage):
        monkeypatch.setattr(module, "HEARTBEAT_S", 1)
        monkeypatch.setattr(module, "GRACE_S", 1)
    ledger = open_ledger(open_storage(f"sqlite:///{tmp_path / 'study.db'}"), "queue")
    enqueue_missing(ledger, ["elsewhere", "unclaimed"])
    claim = claim_queued(ledger, {"elsewhere"})
    # A worker on another machine: alive as far as this host can tell, but its heartbeat stops.
    ledger.storage.set_trial_user_attr(claim.trial_id, CLAIM, {"host": "other-machine", "pid": 1, "trial": 0})
    # A worker that died between taking a trial and writing its claim.
    unclaimed = ledger.storage.get_trial_id_from_study_id_trial_number(ledger.study_id, 1)
    assert ledger.storage.set_trial_state_values(unclaimed, TrialState.RUNNING)
    assert fail_dead_trials(ledger) == 0, "both are within their grace period"
    time.sleep(2.5)
    fail_dead_trials(ledger)
    assert sorted(states(ledger)) == [
        ("elsewhere", "FAIL"),
        ("elsewhere", "WAITING"),
        ("unclaimed", "FAIL"),
        ("unclaimed", "WAITING"),
    ]


def test_importing_the_study_layer_leaves_optunas_log_level_alone():
    import subprocess
    import sys

    code = (
        "import optuna; before = optuna.logging.get_verbosity(); "
        "import cxrlab.study.sweep, cxrlab.study.trials, cxrlab.cli; "
        "assert optuna.logging.get_verbosity() == before == optuna.logging.INFO, optuna.logging.get_verbosity()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
