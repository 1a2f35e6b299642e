"""Section B, hyperparameters and results: every setting the study ran, and whether the spread
across the settings of one model and mode is more than the noise of the test split."""

from __future__ import annotations

from cxrlab.core.modes import mode_title
from cxrlab.report import findings
from cxrlab.report.document import Block, Findings, Paragraph, table
from cxrlab.report.study_results import StudyResults
from cxrlab.report.tables import results_cells, results_note, results_rows


def section_settings(study: StudyResults) -> list[Block]:
    rows = results_rows(study.runs + study.diverged)
    blocks: list[Block] = [
        Paragraph(
            "Every setting the study ran, with its training time, test loss and test accuracy. " + results_note(rows)
        )
    ]
    if rows:
        columns, cells = results_cells(rows)
        blocks.append(table("Results by setting", columns, cells))
    sentences = []
    for key, group in study.groups.items():
        model, mode = key
        sentences += findings.settings_findings(
            f"{model} ({mode_title(mode)})", [study.row(r) for r in group], study.spreads.get(key, {}), study.sets
        )
    if not sentences:
        sentences = [
            "No model and mode ran with more than one setting, so there is no spread of settings to "
            "weigh against the noise of the test split."
        ]
    return blocks + [Findings(sentences)]
