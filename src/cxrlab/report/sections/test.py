"""Section E, the test analysis against the from-scratch baseline: every chosen run against the
baseline (one family of tests), the curves of the test predictions, and each run's confusion
matrix, per-class numbers, mistakes and Grad-CAM."""

from __future__ import annotations

from pathlib import Path

from cxrlab.core.text import percent, slug
from cxrlab.report import curves, figures, findings
from cxrlab.report.cells import THRESHOLD_WORDS, pairs_caption, pairs_table, runs_table, unit_caption
from cxrlab.report.document import Block, Figure, Findings, Paragraph, Subheading, table
from cxrlab.report.formatting import decimal, number_ci, percent_ci
from cxrlab.report.scored import TEST
from cxrlab.report.sections.cases import cam_blocks, mistake_blocks
from cxrlab.report.sections.overview import split_statement
from cxrlab.report.study_results import StudyResults
from cxrlab.report.wording import set_title
from cxrlab.training.records import RunRecord


def section_test(study: StudyResults, out: Path, cam_device: str) -> list[Block]:
    baseline = study.baseline
    chosen = study.chosen()
    rows = [study.row(r) for r in chosen]
    pairs = study.baseline_pairs
    blocks: list[Block] = [Paragraph(split_statement(study))]
    blocks.append(
        Findings(
            findings.baseline_findings(rows, study.row(baseline) if baseline else None, pairs, study.sets)
            + findings.sensitivity_findings(rows)
            + findings.calibration_findings(rows, lambda a, b: study.pair(_run(study, a), _run(study, b)))
        )
    )
    columns, cells = runs_table(rows, study.sets)
    blocks.append(table(f"Test results of the run of each model and mode ({unit_caption(rows)})", columns, cells))
    if pairs:
        columns, cells = pairs_table(pairs, study.sets)
        blocks.append(
            table(
                f"Each run against the from-scratch baseline ({pairs_caption(pairs)}; Holm's adjustment)",
                columns,
                cells,
            )
        )
    blocks += curve_blocks(study, chosen, out)
    for run in chosen:
        blocks += run_test_blocks(study, run, out)
    for run in _unique([study.best, baseline]):
        blocks += cam_blocks(study, run, out, cam_device)
    return blocks


def _run(study: StudyResults, run_id: str) -> RunRecord:
    return next(r for r in study.runs if r.run_id == run_id)


def curve_blocks(study: StudyResults, chosen: list[RunRecord], out: Path, name: str = TEST) -> list[Block]:
    """ROC, precision-recall and calibration of the chosen runs on one evaluation set."""
    inputs = [
        curves.curve_input(study.set_of(r, name), study.labels[r.run_id])
        for r in chosen
        if name in study.scored[r.run_id]
    ]
    where = "the test split" if name == TEST else name
    stem = "test" if name == TEST else f"external-{slug(name)}"
    return [
        Figure(
            figures.save_png(curves.roc_figure(inputs, f"ROC curves on {where}"), out / f"{stem}-roc.png"),
            f"ROC curves on {where}; the dots are the operating points at each run's validation-chosen threshold.",
        ),
        Figure(
            figures.save_png(
                curves.precision_recall_figure(inputs, f"Precision-recall curves on {where}"),
                out / f"{stem}-precision-recall.png",
            ),
            f"Precision-recall curves on {where}.",
        ),
        Figure(
            figures.save_png(
                curves.reliability_figure(inputs, title=f"Calibration on {where}"), out / f"{stem}-calibration.png"
            ),
            "Reliability diagram: how often a run is right against how sure it was.",
        ),
    ]


def run_test_blocks(study: StudyResults, run: RunRecord, out: Path) -> list[Block]:
    """One run's test analysis: the confusion matrix, per-class metrics, the mistakes."""
    a = study.row(run)
    label = study.labels[run.run_id]
    role = " (the from-scratch baseline)" if run is study.baseline else ""
    blocks: list[Block] = [Subheading(f"{label}{role}")]
    line = (
        f"Test accuracy {percent_ci(a.test.accuracy)}, AUC {number_ci(a.test.roc_auc)}"
        + (f" (macro one-vs-rest), balanced accuracy {percent(a.test.balanced_accuracy)}" if not a.binary else "")
        + f", test loss {decimal(a.test.loss)}, expected calibration error {number_ci(a.test.ece)}"
    )
    if a.binary:
        line += (
            f"; accuracy, sensitivity {percent_ci(a.test.sensitivity)} and specificity "
            f"{percent_ci(a.test.specificity)} at the threshold p({a.positive_class}) ≥ {a.threshold:.3f} chosen on "
            f"validation ({THRESHOLD_WORDS.get(a.threshold_rule, a.threshold_rule)})"
        )
    else:
        line += "; decisions at the most probable class"
    line += f"; kept epoch {a.best_epoch} of {a.epochs_run}."
    for name, role in study.external_sets.items():
        there = a.on(name)
        if there is not None:
            line += (
                f" On {set_title(name, role)}: accuracy {percent_ci(there.accuracy)}, AUC {number_ci(there.roc_auc)}"
            )
            if there.sensitivity is not None:
                line += f", sensitivity {percent_ci(there.sensitivity)}, specificity {percent_ci(there.specificity)}"
            line += "."
    blocks.append(Paragraph(line))
    path = figures.save_png(
        figures.confusion_figure(a.test.confusion_matrix, a.classes, f"{label}: test confusion matrix"),
        out / f"confusion-{slug(run.run_id)}.png",
    )
    blocks.append(Figure(path, f"Confusion matrix of {label} on the test split (rows: true class)."))
    recall = "recall (95% CI, by patient)" if a.test.unit == "patient" else "recall (95% Wilson CI)"
    per_class = [
        [name, percent(v.precision), percent_ci(v.recall_interval), f"{v.f1:.3f}", v.support]
        for name, v in a.test.per_class.items()
    ]
    blocks.append(table(f"{label}: per class", ["class", "precision", recall, "F1", "test images"], per_class))
    if run is study.best or run is study.baseline:
        blocks += mistake_blocks(study, run, out)
    return blocks


def _unique(runs: list[RunRecord | None]) -> list[RunRecord]:
    seen, unique = set(), []
    for run in runs:
        if run is not None and run.run_id not in seen:
            seen.add(run.run_id)
            unique.append(run)
    return unique
