"""``cxrlab report STUDY_DIR``: report.md and a self-contained report.html, tasks A to E and what transferred (F).

``write_report`` reads the study's finished runs (``<study>/runs/<run>``), analyses them and
runs the families of tests (``cxrlab.report.study_results``), draws the figures into
``<study>/report_files/``, and lays the report out as sections of blocks
(``cxrlab.report.sections``), written as Markdown and HTML (``cxrlab.report.document``).

Which runs stand for a model and mode: the lowest validation loss, ties by validation AUC,
the rule that chose each run's epoch. The test split never chooses anything; it is only
reported, as are the external sets.
"""

from __future__ import annotations

import os
from pathlib import Path

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import write_text
from cxrlab.evaluate.stats import N_BOOT
from cxrlab.report.document import FIGURES_FOLDER, Report, Section, html_text, markdown_text
from cxrlab.report.sections.external import section_external
from cxrlab.report.sections.frozen import section_frozen
from cxrlab.report.sections.models import section_models
from cxrlab.report.sections.modes import section_modes
from cxrlab.report.sections.overview import summary_lines
from cxrlab.report.sections.settings import section_settings
from cxrlab.report.sections.statistics import section_statistics
from cxrlab.report.sections.test import section_test
from cxrlab.report.sections.transfer import section_transfer
from cxrlab.report.study_results import StudyResults
from cxrlab.report.transfer_runs import TransferResults
from cxrlab.training.records import DIVERGED, RunRecord, list_runs


def write_report(
    study_dir: str | os.PathLike, n_boot: int = N_BOOT, seed: int = 0, cam_device: str = "cpu"
) -> list[Path]:
    """Write ``report.md`` and ``report.html`` into ``study_dir``; returns their paths."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise CxrlabError(f"study directory {study_dir} does not exist: pass the folder cxrlab sweep made")
    every_run = list_runs(study_dir / "runs", finished_only=False)
    runs = [r for r in every_run if r.finished]
    if not runs:
        raise CxrlabError(f"{study_dir / 'runs'} holds no finished runs: run cxrlab sweep on the study first")
    # Diverged runs came to an end and belong in the results table; failed or still running
    # ones (another worker's) do not.
    diverged = [r for r in every_run if r.status.status == DIVERGED]
    report = build_report(study_dir, runs, n_boot=n_boot, seed=seed, cam_device=cam_device, diverged=diverged)
    markdown_path, html_path = study_dir / "report.md", study_dir / "report.html"
    write_text(markdown_path, markdown_text(report))
    write_text(html_path, html_text(report))
    return [markdown_path, html_path]


def build_report(
    study_dir: Path,
    runs: list[RunRecord],
    n_boot: int = N_BOOT,
    seed: int = 0,
    cam_device: str = "cpu",
    diverged: list[RunRecord] | None = None,
) -> Report:
    """The report's sections, with its figures written into ``study_dir / report_files``.
    Finished ``runs`` are analysed; ``diverged`` ones are only listed (summary and section B)."""
    study = StudyResults(runs, n_boot, seed, diverged)
    out = study_dir / FIGURES_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    sections = [
        Section("task-a", "A. Model selection", section_models(study)),
        Section("task-b", "B. Hyperparameters and results", section_settings(study)),
        Section("task-c", "C. The fixed feature extractor", section_frozen(study, out)),
        Section(
            "task-d",
            "D. Comparing fine-tuning, the fixed feature extractor and training from scratch",
            section_modes(study, out),
        ),
        Section("task-e", "E. Test analysis against the from-scratch baseline", section_test(study, out, cam_device)),
        Section("transfer", "F. What transferred", section_transfer(TransferResults(study, study_dir), out)),
    ]
    if study.external_sets:
        sections.append(Section("external", "G. External sets", section_external(study, out)))
    sections.append(Section("statistics", "Statistics: units, tests and adjustment", section_statistics(study)))
    return Report(f"Study report: {study_dir.name}", summary_lines(study, study_dir), sections)
