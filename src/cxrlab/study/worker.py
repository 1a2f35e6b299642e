"""A sweep worker: takes queued runs, then search trials, until the study has nothing left.

A worker (a process here, or a ``cxrlab sweep`` on another machine sharing the storage)
takes queued runs until none is left, then trials of the search blocks until their budgets
are spent, then waits while other workers still run something (one of them may die and
leave its run to be redone). Each run is a run directory under ``<study>/runs``: kept when
it finished or diverged, resumed when it was killed, else trained.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optuna.trial import TrialState

from cxrlab.core.errors import CxrlabError
from cxrlab.core.progress import log_to_console
from cxrlab.study.estimate import Estimator, ImageCounts
from cxrlab.study.names import search_run_id
from cxrlab.study.plan import PlannedRun, SearchPlan, StudyPlan
from cxrlab.study.progress import StudyProgress
from cxrlab.study.quiet import optuna_warnings_only
from cxrlab.study.storage import open_storage
from cxrlab.study.trials import (
    HOST,
    Claim,
    Ledger,
    claim_queued,
    claim_search_trial,
    count_states,
    fail,
    fail_dead_trials,
    finish,
    heartbeat,
    open_ledger,
    record_settings,
    retried_from,
    trials_by_run,
)
from cxrlab.training.config import TrainConfig
from cxrlab.training.records import DIVERGED, FINISHED, RunRecord, load_run, run_status

logger = logging.getLogger(__name__)

# How often an idle worker looks again for queued runs and dead workers.
POLL_S = 2.0

Log = Callable[[str], None]


@dataclass
class Job:
    """What every worker of a study shares: the plan, where runs go, the storage."""

    plan: StudyPlan
    study_dir: Path
    url: str
    show_progress: bool = True
    log: Log = field(default_factory=lambda: plain_log)
    seeded: bool = True  # one seeded sampler: a single-worker study is repeatable
    index: int = 0  # this worker's number
    workers: int = 1
    counts: ImageCounts | None = None  # the split sizes, for time estimates

    @property
    def runs_dir(self) -> Path:
        return self.study_dir / "runs"

    @property
    def done_attrs(self) -> dict[str, Any]:
        """Recorded on every trial a worker completes: which machine and folder hold its runs."""
        return {"host": HOST, "study_dir": str(self.study_dir.resolve())}


def search_study_name(plan: StudyPlan, search: SearchPlan) -> str:
    return f"{plan.name}/{search.label}"


def work(job: Job, progress: StudyProgress | None = None) -> None:
    """One worker: queued runs, then search trials, until the study has nothing left to run."""
    import optuna

    plan = job.plan
    storage = open_storage(job.url)
    grid = open_ledger(storage, plan.name)
    if progress is None:
        estimator = Estimator.for_study(job.study_dir, job.counts)
        done = lambda: done_count(plan, storage)  # noqa: E731
        progress = StudyProgress(plan, job.study_dir, job.log, workers=job.workers, estimator=estimator, done=done)
    searches = []
    for search in plan.searches:
        # Workers that share a storage draw their own samplers, so that they do not propose
        # the same first trials.
        sampler = optuna.samplers.TPESampler(seed=job.index if job.seeded else None)
        ledger = open_ledger(storage, search_study_name(plan, search), sampler)
        searches.append((search, ledger, distributions(search)))
    planned = {run.run_id: run for run in plan.runs}
    params = grid_params(plan)
    with optuna_warnings_only():
        while True:
            claim = claim_queued(grid, set(planned))
            if claim is not None and claim.run_id is not None:
                run_claimed(job, claim, planned[claim.run_id], params, progress)
                continue
            for search, ledger, space in searches:
                claim = claim_search_trial(ledger, search.trials, space)
                if claim is not None:
                    run_search_trial(job, claim, search, progress)
                    break
            else:
                if not _running_elsewhere(grid, set(planned), [ledger for _, ledger, _ in searches]):
                    return
                time.sleep(POLL_S)
                for ledger in [grid] + [ledger for _, ledger, _ in searches]:
                    fail_dead_trials(ledger)


def done_count(plan: StudyPlan, storage) -> int:
    """Runs of the study done so far, by every worker (search trials count once per seed)."""
    done = count_states(open_ledger(storage, plan.name)).get(TrialState.COMPLETE, 0)
    for search in plan.searches:
        ledger = open_ledger(storage, search_study_name(plan, search))
        done += count_states(ledger).get(TrialState.COMPLETE, 0) * plan.repeats
    return done


def run_claimed(job: Job, claim: Claim, run: PlannedRun, params: dict, progress: StudyProgress) -> None:
    """Run (or reuse, or resume) the run of a claimed trial and record the outcome on it."""
    shown = {key: (run.settings[key], distribution) for key, distribution in params.items()}
    record_settings(claim, shown, {"setting": run.setting_id, "seed": run.seed, "origin": run.origin})
    with heartbeat(claim):
        try:
            record = execute_run(job, run.settings, run.run_id, progress)
        except Exception as exc:
            _report_failure(job.log, run.run_id, exc)
            fail(claim, f"{type(exc).__name__}: {exc}")
            return
        except BaseException:
            fail(claim, "interrupted")
            raise
    finish(claim, objective(record), status=record.status.status, **job.done_attrs)


def run_search_trial(job: Job, claim: Claim, search: SearchPlan, progress: StudyProgress) -> None:
    """Run a search trial's setting at every seed; its objective is their mean validation loss."""
    number = retried_from(claim)  # a retry of a dead trial resumes the same run directories
    run_ids, values = [], []
    with heartbeat(claim):
        try:
            for seed in job.plan.seeds:
                run_id = search_run_id(search.label, number, claim.params, seed)
                progress.note(f"search {search.label}, trial {number} of a budget of {search.trials}")
                record = execute_run(job, search.settings(claim.params, seed), run_id, progress)
                run_ids.append(run_id)
                values.append(objective(record))
        except Exception as exc:
            _report_failure(job.log, f"search {search.label} trial {number}", exc)
            fail(claim, f"{type(exc).__name__}: {exc}")
            return
        except BaseException:
            fail(claim, "interrupted")
            raise
    finish(claim, sum(values) / len(values), run_ids=run_ids, **job.done_attrs)


def execute_run(job: Job, settings: dict, run_id: str, progress: StudyProgress) -> RunRecord:
    """The run directory ``runs/run_id``: kept when it finished or diverged, resumed when it
    was killed, else trained now."""
    from cxrlab.training.loop import fit

    run_dir = job.runs_dir / run_id
    status = run_status(run_dir)
    if status in (FINISHED, DIVERGED):
        job.log(f"{run_id}: {status} before, kept")
        return load_run(run_dir, require_finished=False)
    config = TrainConfig(**settings, out=str(job.runs_dir), name=run_id)
    with progress.run(run_id, settings) as log:
        if (run_dir / "config.yaml").exists():
            log(f"{run_id}: resuming the unfinished run ({status})")
            fit(config=None, resume=run_dir, show_progress=job.show_progress, log=log)
        else:
            if run_dir.exists():
                shutil.rmtree(run_dir)  # killed before it recorded its settings: nothing to keep
            fit(config, show_progress=job.show_progress, log=log)
    return load_run(run_dir, require_finished=False)


def objective(record: RunRecord) -> float:
    """What a trial minimises: the validation loss of the selected checkpoint (inf when the
    run diverged). Never a test number."""
    if record.status.status != FINISHED:
        return math.inf
    return float(record.scores.val_loss)


def distributions(search: SearchPlan) -> dict:
    """The search space as Optuna distributions."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    for key, d in search.space.items():
        if d.kind == "categorical":
            space[key] = CategoricalDistribution(list(d.choices))
        elif d.kind == "int":
            space[key] = IntDistribution(int(d.low or 0), int(d.high or 0), log=d.log, step=int(d.step or 1))
        else:
            space[key] = FloatDistribution(float(d.low or 0), float(d.high or 0), log=d.log, step=d.step)
    return space


def grid_params(plan: StudyPlan) -> dict:
    """The settings that vary between the study's table and grid runs, as Optuna
    distributions over the values the plan uses, so that a dashboard can plot each run's
    setting against its validation loss. Numbers are ranges, anything else choices."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    params: dict[str, Any] = {}
    keys = sorted({k for run in plan.runs for k in run.settings} - {"seed", "data", "external"})
    for key in keys:
        values = {repr(run.settings.get(key)): run.settings.get(key) for run in plan.runs}
        if len(values) < 2:
            continue
        numbers = [v for v in values.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if len(numbers) == len(values):
            low, high = min(numbers), max(numbers)
            log = low > 0 and high / low >= 10
            whole = all(isinstance(v, int) for v in numbers)
            params[key] = (
                IntDistribution(int(low), int(high), log=log) if whole else FloatDistribution(low, high, log=log)
            )
        elif all(v is None or isinstance(v, (str, int, float, bool)) for v in values.values()):
            params[key] = CategoricalDistribution(sorted(values.values(), key=repr))
    return params


# --- local worker processes ---------------------------------------------------------------


def run_workers(job: Job, workers: int) -> list[int]:
    """``workers`` local processes on one storage; returns their exit codes."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = [
        context.Process(
            target=_worker_main,
            args=(job.plan, str(job.study_dir), job.url, index, workers, threads, job.counts),
            name=f"cxrlab-worker-{index}",
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
    return [process.exitcode or 0 for process in processes]


def _worker_main(
    plan: StudyPlan, study_dir: str, url: str, index: int, workers: int, threads: int, counts: ImageCounts | None
) -> None:
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(threads)
    log_to_console()  # a fresh interpreter: show the library's messages as the command line does
    prefix = f"worker {index}: "

    def log(line: str) -> None:
        logger.info(prefix + line)

    job = Job(plan, Path(study_dir), url, False, log, seeded=False, index=index, workers=workers, counts=counts)
    try:
        work(job)
    except KeyboardInterrupt:
        sys.exit(130)
    except CxrlabError as exc:
        logger.error(f"worker {index}: {exc}")
        sys.exit(exc.exit_code)


def _running_elsewhere(grid: Ledger, run_ids: set[str], searches: list[Ledger]) -> bool:
    """Whether another worker still runs one of our runs or search trials (it may die and
    leave its run to be redone, so an idle worker waits for it)."""
    for run_id, trials in trials_by_run(grid).items():
        if run_id in run_ids and any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in trials):
            return True
    return any(count_states(ledger).get(TrialState.RUNNING, 0) for ledger in searches)


def _report_failure(log: Log, what: str, exc: Exception) -> None:
    if isinstance(exc, CxrlabError):
        log(f"{what} failed: {exc}")
    else:
        log(f"{what} failed: {type(exc).__name__}: {exc}")
        traceback.print_exc()


def plain_log(line: str) -> None:
    """The study's messages go to the ``cxrlab`` logger (the command line prints them)."""
    logger.info(line)
