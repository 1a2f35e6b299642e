"""``cxrlab sweep``: every run of a study, each once, resumable, shared by many workers.

Read it top to bottom: ``run_sweep`` resolves the study file (every run validated before
any starts), checks the data, makes the study directory, agrees on the plan with every
other worker of the study, queues the runs in the Optuna storage, lets the workers run
them (``worker``), and writes the results table.

    runs/<study>/study.db         Optuna storage (SQLite; or --storage postgresql://...)
                 study.yaml       the plan, recorded by the first sweep: every run id and its settings
                 overrides.yaml   the --set overrides of the last sweep command
                 runs/<run_id>/   ordinary run directories
                 results.csv      one row per setting (report.tables)
                 results.md

A study directory holds one plan. A sweep whose plan differs (other ``--set``, other
``--data``, an edited study file) is refused with the keys that differ, here and on every
machine that shares the storage: a study with other settings gets another ``--name``. A
run directory that finished (or diverged) is never redone: a rerun reuses it; one that was
killed is resumed from its last epoch; one whose directory was deleted is run again.
"""

from __future__ import annotations

import json
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import read_yaml, write_yaml
from cxrlab.report.tables import results_rows, write_results
from cxrlab.study.catalog import find_study
from cxrlab.study.plan import StudyPlan, differences
from cxrlab.study.quiet import optuna_warnings_only
from cxrlab.study.sources import check_sources
from cxrlab.study.spec import load_plan
from cxrlab.study.storage import default_storage_url, open_storage, shown_url, storage_url
from cxrlab.study.trials import (
    HOST,
    RUN_ID,
    Ledger,
    agreed_plan,
    count_states,
    enqueue_missing,
    fail_dead_trials,
    mark_lost,
    open_ledger,
    trials_by_run,
    trials_of,
)
from cxrlab.study.worker import Job, Log, plain_log, run_workers, search_study_name, work
from cxrlab.training.config import EXECUTION_SETTINGS, TrainConfig
from cxrlab.training.records import DIVERGED, FINISHED, RunRecord, list_runs, read_config, run_status


def run_sweep(
    study_file: str | Path | None,
    *,
    data: str | None = None,
    storage: str | None = None,
    workers: int = 1,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
    name: str | None = None,
    external: list[str] | tuple[str, ...] = (),
    show_progress: bool = True,
    log: Log | None = None,
) -> Path:
    """Run every run of ``study_file`` (a path or a shipped study's name) and return the
    study directory (with results.md).

    ``data`` replaces the study's data, ``storage`` its Optuna storage (default SQLite in
    the study directory), ``overrides`` (``KEY=VALUE``) set a field of every run, ``out`` is
    the folder the study directory goes in (default ``runs``), ``name`` the study
    directory's name (default the study's), ``external`` (``NAME=PATH``) replaces or adds
    an external set (``NAME=`` drops one)."""
    if workers < 1:
        raise CxrlabError(f"--workers {workers}: give 1 or more")
    log = log or plain_log
    plan = load_plan(find_study(study_file), data=data, overrides=overrides, name=name, external=external)
    study_dir = Path(out if out is not None else "runs") / plan.name
    url = storage_url(storage) if storage else default_storage_url(study_dir)
    sources = check_sources(plan)
    identity = _plain(plan.identity(sources.fingerprints))
    _check_recorded_plan(plan, study_dir, identity)
    check_recorded_runs(plan, study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    for line in plan.merged:
        log(f"note: {line}")

    with optuna_warnings_only():
        queued, dead = prepare_storage(plan, url, identity, study_dir, local=storage is None, log=log)
    if not (study_dir / "study.yaml").exists():
        write_yaml(study_dir / "study.yaml", {**plan.record(), "storage": shown_url(url), "identity": identity})
    write_yaml(study_dir / "overrides.yaml", {"set": list(overrides), "values": plan.overrides})
    log(
        f"study {plan.name}: {len(plan.runs)} runs"
        + (f" and {len(plan.searches)} searches" if plan.searches else "")
        + f" in {study_dir}; {queued} queued now"
        + (f", {dead} left by dead workers queued again" if dead else "")
        + f"; storage {shown_url(url)}"
    )

    job = Job(plan, study_dir, url, show_progress, log, seeded=storage is None, workers=workers, counts=sources.counts)
    exit_codes = [0] if workers == 1 else run_workers(job, workers)
    if workers == 1:
        work(job)
    return _results(plan, study_dir, url, exit_codes, log)


def _results(plan: StudyPlan, study_dir: Path, url: str, exit_codes: list[int], log: Log) -> Path:
    """Write the results table; an error naming what is missing if the study is not complete."""
    rows = results_rows(study_runs(study_dir, plan))
    write_results(rows, study_dir)
    problems = unfinished(plan, url)
    problems += [f"worker {i} exited with code {code}" for i, code in enumerate(exit_codes) if code]
    if problems:
        raise CxrlabError(
            f"{len(problems)} parts of study {plan.name} did not finish: "
            + "; ".join(problems[:3])
            + ("; ..." if len(problems) > 3 else "")
            + f" (results so far in {study_dir / 'results.md'}; rerun the same command to retry, "
            "finished runs are kept)"
        )
    log(f"study {plan.name}: {len(rows)} settings in {study_dir / 'results.md'}")
    return study_dir


def prepare_storage(
    plan: StudyPlan, url: str, identity: dict, study_dir: Path, *, local: bool, log: Log
) -> tuple[int, int]:
    """Make the Optuna studies, agree on the plan, queue again the runs whose directories are
    gone and those of dead workers, and queue every run not yet done or queued; returns
    ``(queued, dead)``."""
    storage = open_storage(url)
    grid = open_ledger(storage, plan.name)
    recorded = agreed_plan(grid, identity)
    if recorded != identity:
        raise CxrlabError(_disagreement(plan, shown_url(url), recorded, identity))
    ledgers = [grid] + [open_ledger(storage, search_study_name(plan, search)) for search in plan.searches]
    for ledger in ledgers:
        for trial, missing in lost_trials(ledger, study_dir, local):
            log(f"{missing[0]} finished before but its run directory is gone: it runs again")
            mark_lost(ledger, trial)
    dead = sum(fail_dead_trials(ledger) for ledger in ledgers)
    queued = enqueue_missing(grid, [run.run_id for run in plan.runs])
    return queued, dead


def lost_trials(ledger: Ledger, study_dir: Path, local: bool) -> list[tuple[FrozenTrial, list[str]]]:
    """Completed trials of this study directory whose runs have no finished or diverged
    directory here, with the missing run ids. With a shared storage only trials completed
    by this host in this folder are checked: other machines hold their own runs."""
    here = str(study_dir.resolve())
    lost = []
    for trial in trials_of(ledger, (TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if not (local or (attrs.get("host") == HOST and attrs.get("study_dir") == here)):
            continue
        run_ids = [attrs[RUN_ID]] if RUN_ID in attrs else list(attrs.get("run_ids", []))
        missing = [run_id for run_id in run_ids if not _ended(study_dir / "runs" / run_id)]
        if missing:
            lost.append((trial, missing))
    return lost


def check_recorded_runs(plan: StudyPlan, study_dir: Path) -> None:
    """Refuse to reuse a run directory recorded with other settings than the study now asks
    for: it would be kept as if it were the same."""
    for run in plan.runs:
        run_dir = study_dir / "runs" / run.run_id
        if not (run_dir / "config.yaml").exists():
            continue
        recorded = read_config(run_dir).model_dump()
        wanted = TrainConfig(**run.settings).resolved().model_dump()
        for key, value in wanted.items():
            if key not in EXECUTION_SETTINGS | {"data", "external"} and recorded.get(key) != value:
                raise CxrlabError(
                    f"{run_dir} was run with {key}={recorded.get(key)!r} but the study now asks "
                    f"for {key}={value!r}: give this study another name (--name), or remove {study_dir} "
                    "to start it over"
                )


def study_runs(study_dir: str | Path, plan: StudyPlan | None = None) -> list[RunRecord]:
    """The runs of a study directory that came to an end (finished or diverged); with a
    plan, only the plan's runs and search trials."""
    planned = {run.run_id for run in plan.runs} if plan is not None else set()
    prefixes = [f"{search.label}-t" for search in plan.searches] if plan is not None else []

    def in_plan(run_id: str) -> bool:
        return plan is None or run_id in planned or any(run_id.startswith(p) for p in prefixes)

    return [
        run
        for run in list_runs(Path(study_dir) / "runs", finished_only=False)
        if run.status.status in (FINISHED, DIVERGED) and in_plan(run.run_id)
    ]


def unfinished(plan: StudyPlan, url: str) -> list[str]:
    """What the study still lacks, one phrase each: runs without a completed trial (with the
    error of their last try) and searches short of their budget."""
    storage = open_storage(url)
    by_run = trials_by_run(open_ledger(storage, plan.name))
    problems = []
    for run in plan.runs:
        trials = by_run.get(run.run_id, [])
        if any(t.state == TrialState.COMPLETE for t in trials):
            continue
        errors = [t.user_attrs["error"] for t in trials if "error" in t.user_attrs]
        problems.append(f"{run.run_id}: {errors[-1] if errors else 'not run'}")
    for search in plan.searches:
        complete = count_states(open_ledger(storage, search_study_name(plan, search))).get(TrialState.COMPLETE, 0)
        if complete < search.trials:
            problems.append(f"search {search.label}: {complete} of {search.trials} trials done")
    return problems


# --- pieces -------------------------------------------------------------------------------


def _check_recorded_plan(plan: StudyPlan, study_dir: Path, identity: dict) -> None:
    """The plan in the study directory's study.yaml, where one is, must be this one."""
    record = study_dir / "study.yaml"
    if not record.exists():
        return
    recorded = (read_yaml(record) or {}).get("identity")
    if recorded is not None and _plain(recorded) != identity:
        raise CxrlabError(_disagreement(plan, str(record), _plain(recorded), identity))


def _disagreement(plan: StudyPlan, where: str, recorded: dict, identity: dict) -> str:
    keys = differences(recorded, identity)
    return (
        f"study {plan.name} in {where} was planned with other settings; this sweep differs in "
        + "; ".join(keys[:4])
        + ("; ..." if len(keys) > 4 else "")
        + ": give it another name (--name NEW), or use the recorded --set and --data"
    )


def _plain(data: dict) -> dict:
    """``data`` as it reads back from JSON (tuples as lists), so that records compare equal."""
    return json.loads(json.dumps(data, sort_keys=True, default=str))


def _ended(run_dir: Path) -> bool:
    try:
        return run_status(run_dir) in (FINISHED, DIVERGED)
    except (CxrlabError, ValueError, OSError):
        return False
