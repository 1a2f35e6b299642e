"""Where a study is and how long is left, one line per run and per epoch.

Each run starts with a line (``run 3 of 6``, with its estimate and the study's); each epoch
line of the run gets the study's state appended (``3 of 6 runs done, about 18 min left``),
the estimate refreshed from the epoch times the study has measured. The lines go through
the sweep's log, so in a log file with no terminal the study still says what it does once
an epoch, never a silent half hour.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cxrlab.study.estimate import Estimator, duration
from cxrlab.study.plan import StudyPlan
from cxrlab.training.config import TrainConfig
from cxrlab.training.phases import plan_phases
from cxrlab.training.records import load_run

Log = Callable[[str], None]


class StudyProgress:
    """Counts a study's runs and measured epochs, and says where it is."""

    def __init__(
        self,
        plan: StudyPlan,
        study_dir: Path,
        log: Log,
        *,
        workers: int = 1,
        estimator: Estimator | None = None,
        done: Callable[[], int] | None = None,
    ):
        self.plan, self.study_dir, self.log, self.workers = plan, study_dir, log, workers
        self.estimator = estimator or Estimator.for_study(study_dir, None)
        self.total = len(plan.runs) + sum(s.trials for s in plan.searches) * plan.repeats
        self.done = done or (lambda: 0)
        self._context = ""

    def note(self, text: str) -> None:
        """Context for the next run's first line (e.g. which search trial it belongs to)."""
        self._context = text

    @contextlib.contextmanager
    def run(self, run_id: str, settings: dict[str, Any]) -> Iterator[Log]:
        """Around one run: its first line, then a log for the fit loop whose epoch lines say
        where the study is."""
        done = self.done()
        estimate = self.estimator.run_seconds(settings)
        context, self._context = self._context, ""
        self.log(
            f"{run_id}: run {min(done + 1, self.total)} of {self.total}"
            + (f" ({context})" if context else "")
            + (f", about {duration(estimate)}" if estimate is not None else "")
            + self._left(done, settings, 0)
        )
        config = TrainConfig(**settings).resolved()
        epochs = sum(p.epochs for p in plan_phases(config))
        run_dir = self.study_dir / "runs" / run_id
        seen = [_epochs_done(run_dir)]
        tick = time.monotonic()

        def log(line: str) -> None:
            count = _epochs_done(run_dir)
            if count > seen[0]:
                seen[0] = count
                self._measure(run_dir)
                line += f" | epoch {count} of {epochs}, {done} of {self.total} runs done" + self._left(
                    done, settings, count
                )
            self.log(line)

        yield log
        self.log(f"{run_id}: ended after {duration(time.monotonic() - tick)}")

    def _left(self, done: int, settings: dict[str, Any], epochs_done: int) -> str:
        """``, about 18 min left`` for the study (this run's remaining epochs included)."""
        current = self.estimator.run_seconds(settings)
        if current is None:
            return ""
        config = TrainConfig(**settings).resolved()
        epochs = max(1, sum(p.epochs for p in plan_phases(config)))
        remaining = current * (1 - min(epochs_done, epochs) / epochs)
        later = self.plan.runs[done + 1 :]
        remaining += sum(self.estimator.run_seconds(run.settings) or 0.0 for run in later) / self.workers
        trials_left = self.total - max(done + 1, len(self.plan.runs))
        if self.plan.searches and trials_left > 0:
            each = [self.estimator.run_seconds(search.fixed) or 0.0 for search in self.plan.searches]
            remaining += trials_left * sum(each) / len(each) / self.workers
        return f", about {duration(remaining)} left"

    def _measure(self, run_dir: Path) -> None:
        """Take the run's newest epoch time into the estimate."""
        with contextlib.suppress(Exception):  # a half-written history is read again next epoch
            run = load_run(run_dir, require_finished=False)
            epoch = run.epochs[-1]
            self.estimator.observe(run.config.model, epoch.phase, run.config.image_size, epoch.seconds)


def _epochs_done(run_dir: Path) -> int:
    try:
        with open(run_dir / "history.csv", encoding="utf-8") as f:
            return max(0, sum(1 for line in f if line.strip()) - 1)
    except OSError:
        return 0
