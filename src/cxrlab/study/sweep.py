"""``cxrlab sweep``: every run of a study, each once, resumable, shared by many workers.

Read it top to bottom: ``run_sweep`` resolves the study file (every run validated before
any starts), makes the study directory, queues the runs in the Optuna storage, lets the
workers run them, and writes the results table. A worker (``work``) takes queued runs
until none is left, then trials of the search blocks until their budgets are spent, then
waits while other workers still run something (one of them may die and leave its run to
be redone).

    runs/<study>/study.db         Optuna storage (SQLite; or --storage postgresql://...)
                 study.yaml       the resolved study: every run id and its settings
                 overrides.yaml   the --set overrides of the last sweep command
                 runs/<run_id>/   ordinary run directories
                 results.csv      one row per setting (report.tables)
                 results.md

A run directory that finished (or diverged) is never redone: a rerun reuses it. One that
was killed is resumed from its last epoch.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from optuna.trial import TrialState

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import read_json, read_yaml, write_yaml
from cxrlab.core.progress import console
from cxrlab.report.tables import results_rows, write_results
from cxrlab.study.spec import PlannedRun, SearchPlan, StudyPlan, load_plan, search_run_id, search_settings
from cxrlab.study.trials import (
    HOST,
    Claim,
    Ledger,
    claim_queued,
    claim_search_trial,
    count_states,
    default_storage_url,
    enqueue_missing,
    fail,
    fail_dead_trials,
    finish,
    heartbeat,
    open_ledger,
    open_storage,
    retried_from,
    shown_url,
    trials_by_run,
)
from cxrlab.training.config import EXECUTION_SETTINGS, TrainConfig
from cxrlab.training.records import DIVERGED, FINISHED, RunRecord, list_runs, load_run

# How often an idle worker looks again for queued runs and dead workers.
POLL_S = 2.0

Log = Callable[[str], None]


def run_sweep(
    study_file: str | Path,
    *,
    data: str | None = None,
    storage: str | None = None,
    workers: int = 1,
    overrides: list[str] | tuple[str, ...] = (),
    out: str | Path | None = None,
    show_progress: bool = True,
) -> Path:
    """Run every run of ``study_file`` and return the study directory (with results.md).

    ``data`` replaces the study's data, ``storage`` its Optuna storage (default SQLite in
    the study directory), ``overrides`` (``KEY=VALUE``) set a field of every run, ``out`` is
    the folder the study directory goes in (default ``runs``)."""
    if workers < 1:
        raise CxrlabError(f"--workers {workers}: give 1 or more")
    plan = load_plan(study_file, data=data, overrides=overrides)
    study_dir = Path(out if out is not None else "runs") / plan.name
    runs_dir = study_dir / "runs"
    check_recorded_runs(plan, runs_dir, study_dir)
    _check_data(plan)
    url = storage or default_storage_url(study_dir)
    study_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(study_dir / "study.yaml", {**plan.record(), "storage": shown_url(url)})
    write_yaml(study_dir / "overrides.yaml", {"set": list(overrides), "values": plan.overrides})

    log = _logger()
    queued, dead = prepare_storage(plan, url)
    log(
        f"study [bold]{plan.name}[/bold]: {len(plan.runs)} runs"
        + (f" and {len(plan.searches)} searches" if plan.searches else "")
        + f" in {study_dir}; {queued} queued now"
        + (f", {dead} left by dead workers queued again" if dead else "")
        + f"; storage {shown_url(url)}"
    )

    exit_codes = [0]
    if workers == 1:
        work(plan, study_dir, url, index=0, seeded=storage is None, show_progress=show_progress, log=log)
    else:
        exit_codes = _run_workers(plan, study_dir, url, workers)

    rows = results_rows(study_runs(study_dir))
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
    log(f"study [bold]{plan.name}[/bold]: {len(rows)} settings in {study_dir / 'results.md'}")
    return study_dir


def prepare_storage(plan: StudyPlan, url: str) -> tuple[int, int]:
    """Make the Optuna studies, fail the trials of dead workers (their runs are queued again)
    and queue every run not yet done or queued; returns ``(queued, dead)``."""
    storage = open_storage(url)
    grid = open_ledger(storage, plan.name)
    dead = fail_dead_trials(grid)
    for search in plan.searches:
        dead += fail_dead_trials(open_ledger(storage, search_study_name(plan, search)))
    queued = enqueue_missing(grid, [run.run_id for run in plan.runs])
    return queued, dead


def work(
    plan: StudyPlan,
    study_dir: Path,
    url: str,
    *,
    index: int = 0,
    seeded: bool = True,
    show_progress: bool = True,
    log: Log | None = None,
) -> None:
    """One worker: queued runs, then search trials, until the study has nothing left to run."""
    import optuna

    log = log or _logger()
    storage = open_storage(url)
    grid = open_ledger(storage, plan.name)
    searches = []
    for search in plan.searches:
        # One seeded sampler makes a single-worker study repeatable; workers that share a
        # storage draw their own so that they do not propose the same first trials.
        sampler = optuna.samplers.TPESampler(seed=index if seeded else None)
        searches.append((search, open_ledger(storage, search_study_name(plan, search), sampler), distributions(search)))
    planned = {run.run_id: run for run in plan.runs}
    runs_dir = study_dir / "runs"

    while True:
        claim = claim_queued(grid, set(planned))
        if claim is not None:
            run_claimed(claim, planned[claim.run_id], runs_dir, grid, len(planned), show_progress, log)
            continue
        for search, ledger, space in searches:
            claim = claim_search_trial(ledger, search.trials, space)
            if claim is not None:
                run_search_trial(claim, search, plan.seeds, runs_dir, show_progress, log)
                break
        else:
            if not _running_elsewhere(grid, set(planned), [ledger for _, ledger, _ in searches]):
                return
            time.sleep(POLL_S)
            for ledger in [grid] + [ledger for _, ledger, _ in searches]:
                fail_dead_trials(ledger)


def run_claimed(
    claim: Claim, run: PlannedRun, runs_dir: Path, grid: Ledger, total: int, show_progress: bool, log: Log
) -> None:
    """Run (or reuse, or resume) the run of a claimed trial and record the outcome on it."""
    done = count_states(grid).get(TrialState.COMPLETE, 0)
    log(f"[bold]{run.run_id}[/bold] ({done} of {total} done)")
    with heartbeat(claim):
        try:
            record = execute_run(run.settings, run.run_id, runs_dir, show_progress=show_progress, log=log)
        except Exception as exc:
            _report_failure(run.run_id, exc, log)
            fail(claim, f"{type(exc).__name__}: {exc}")
            return
        except BaseException:
            fail(claim, "interrupted")
            raise
    finish(claim, objective(record), status=record.status.status, host=HOST)


def run_search_trial(
    claim: Claim, search: SearchPlan, seeds: list[int], runs_dir: Path, show_progress: bool, log: Log
) -> None:
    """Run a search trial's setting at every seed; its objective is their mean validation loss."""
    number = retried_from(claim)  # a retry of a dead trial resumes the same run directories
    run_ids, values = [], []
    with heartbeat(claim):
        try:
            for seed in seeds:
                run_id = search_run_id(search, number, claim.params, seed)
                log(f"[bold]{run_id}[/bold] (search {search.label}, trial {number}, budget {search.trials} trials)")
                record = execute_run(
                    search_settings(search, claim.params, seed), run_id, runs_dir, show_progress=show_progress, log=log
                )
                run_ids.append(run_id)
                values.append(objective(record))
        except Exception as exc:
            _report_failure(f"search {search.label} trial {number}", exc, log)
            fail(claim, f"{type(exc).__name__}: {exc}")
            return
        except BaseException:
            fail(claim, "interrupted")
            raise
    finish(claim, sum(values) / len(values), run_ids=run_ids, host=HOST)


def execute_run(
    settings: dict, run_id: str, runs_dir: Path, *, show_progress: bool = True, log: Log | None = None
) -> RunRecord:
    """The run directory ``runs_dir/run_id``: kept when it finished or diverged, resumed when
    it was killed, else trained now."""
    from cxrlab.training.loop import fit

    run_dir = runs_dir / run_id
    status = _status(run_dir)
    if status in (FINISHED, DIVERGED):
        (log or _logger())(f"{run_id}: {status} before, kept")
        return load_run(run_dir, require_finished=False)
    config = TrainConfig(**settings, out=str(runs_dir), name=run_id)
    if (run_dir / "config.yaml").exists():
        (log or _logger())(f"{run_id}: resuming the unfinished run ({status})")
        fit(config, resume=run_dir, show_progress=show_progress, log=log)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # killed before it recorded its settings: nothing to keep
        fit(config, show_progress=show_progress, log=log)
    return load_run(run_dir, require_finished=False)


def objective(record: RunRecord) -> float:
    """What a trial minimises: the validation loss of the selected checkpoint (inf when the
    run diverged). Never a test number."""
    if record.status.status != FINISHED:
        return math.inf
    return float(record.scores.val_loss)


def study_runs(study_dir: str | Path) -> list[RunRecord]:
    """The runs of a study directory that came to an end (finished or diverged)."""
    return [
        run
        for run in list_runs(Path(study_dir) / "runs", finished_only=False)
        if run.status.status in (FINISHED, DIVERGED)
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


def check_recorded_runs(plan: StudyPlan, runs_dir: Path, study_dir: Path) -> None:
    """Refuse to reuse a run directory recorded with other settings than the study now asks
    for (e.g. after a trial with --set epochs=1): it would be kept as if it were the same."""
    for run in plan.runs:
        config_file = runs_dir / run.run_id / "config.yaml"
        if not config_file.exists():
            continue
        recorded = read_yaml(config_file)
        wanted = TrainConfig(**run.settings).resolved().model_dump()
        for key, value in wanted.items():
            if key not in EXECUTION_SETTINGS and key in recorded and recorded[key] != value:
                raise CxrlabError(
                    f"{config_file.parent} was run with {key}={recorded[key]!r} but the study now asks "
                    f"for {key}={value!r}: remove {study_dir} to start the study over, or give it "
                    f"another name"
                )


def search_study_name(plan: StudyPlan, search: SearchPlan) -> str:
    return f"{plan.name}/{search.label}"


def distributions(search: SearchPlan) -> dict:
    """The search space as Optuna distributions."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space = {}
    for key, d in search.space.items():
        if d.kind == "categorical":
            space[key] = CategoricalDistribution(list(d.choices))
        elif d.kind == "int":
            space[key] = IntDistribution(d.low, d.high, log=d.log, step=d.step or 1)
        else:
            space[key] = FloatDistribution(d.low, d.high, log=d.log, step=d.step)
    return space


# --- pieces -------------------------------------------------------------------------------


def _run_workers(plan: StudyPlan, study_dir: Path, url: str, workers: int) -> list[int]:
    """``workers`` local processes on one storage; returns their exit codes."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [
        context.Process(
            target=_worker_main, args=(plan, str(study_dir), url, index, threads), name=f"cxrlab-worker-{index}"
        )
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (one process group): let them record it and stop.
        for process in processes:
            process.join(timeout=30)
        raise
    return [process.exitcode for process in processes]


def _worker_main(plan: StudyPlan, study_dir: str, url: str, index: int, threads: int) -> None:
    import sys

    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(threads)
    prefix = f"[dim]worker {index}[/dim] "
    try:
        work(
            plan,
            Path(study_dir),
            url,
            index=index,
            seeded=False,
            show_progress=False,
            log=lambda line: console.print(prefix + line, highlight=False, soft_wrap=True),
        )
    except KeyboardInterrupt:
        sys.exit(130)
    except CxrlabError as exc:
        console.print(f"{prefix}[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


def _running_elsewhere(grid: Ledger, run_ids: set[str], searches: list[Ledger]) -> bool:
    """Whether another worker still runs one of our runs or search trials (it may die and
    leave its run to be redone, so an idle worker waits for it)."""
    for run_id, trials in trials_by_run(grid).items():
        if run_id in run_ids and any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
            return True
    return any(count_states(ledger).get(TrialState.RUNNING, 0) for ledger in searches)


def _status(run_dir: Path) -> str | None:
    try:
        return read_json(run_dir / "status.json").get("status")
    except (OSError, ValueError):
        return None


def _check_data(plan: StudyPlan) -> None:
    """A missing data folder fails now, not in every run."""
    from cxrlab.data.sources import list_source

    first = plan.runs[0].settings if plan.runs else plan.searches[0].fixed
    list_source(plan.data, labels=first.get("labels", "folders"), cache_dir=first.get("cache_dir"))


def _report_failure(what: str, exc: Exception, log: Log) -> None:
    if isinstance(exc, CxrlabError):
        log(f"[red]{what} failed[/red]: {exc}")
    else:
        log(f"[red]{what} failed[/red]: {type(exc).__name__}: {exc}")
        traceback.print_exc()


def _logger() -> Log:
    return lambda line: console.print(line, highlight=False, soft_wrap=True)
