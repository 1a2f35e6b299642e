"""``cxrlab study``: the main job. Sweep a study, then write its report.

With no study file it runs the shipped default study (``offline``: pretrained
EfficientNet-Lite0, whose weights install offline, against a small CNN from scratch), and
with no ``--data`` the study's own data. Like the sweep, it resumes where it was stopped.
"""

from __future__ import annotations

from pathlib import Path

from cxrlab.study.catalog import DEFAULT_STUDY, shipped_study
from cxrlab.study.sweep import run_sweep
from cxrlab.study.worker import Log

__all__ = ["DEFAULT_STUDY", "run_study", "shipped_study"]


def run_study(
    study_file: str | Path | None = None,
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
) -> list[Path]:
    """Sweep ``study_file`` (a path or a shipped study's name; default the shipped offline
    study), then write the report; returns the report's files (report.md, report.html)."""
    from cxrlab.report.render import write_report

    study_dir = run_sweep(
        study_file,
        data=data,
        storage=storage,
        workers=workers,
        overrides=overrides,
        out=out,
        name=name,
        external=external,
        show_progress=show_progress,
        log=log,
    )
    return list(write_report(study_dir))


# The columns of results.csv a summary gives per setting.
HEADLINE = [
    "setting",
    "model",
    "mode",
    "n",
    "status",
    "val_loss",
    "val_accuracy_argmax",
    "test_accuracy",
    "roc_auc",
    "training_time_s",
]


def study_summary(study_dir: str | Path, reports: list[Path] | None = None) -> dict:
    """The study directory and its headline numbers per setting, best validation loss first
    (``--json``)."""
    from cxrlab.report.tables import results_rows
    from cxrlab.study.sweep import study_runs

    rows = results_rows(study_runs(study_dir))
    summary: dict = {
        "study_dir": str(study_dir),
        "results": str(Path(study_dir) / "results.md"),
        "settings": [
            {key: row[key] for key in HEADLINE}
            | {f"external_{name}_accuracy": stat.mean for name, stat in row.external.items()}
            for row in rows
        ],
    }
    if reports is not None:
        summary["report"] = [str(path) for path in reports]
    return summary
