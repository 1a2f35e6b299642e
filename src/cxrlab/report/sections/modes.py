"""Section D, fine-tuning against the fixed feature extractor against training from scratch:
for each model the run of each mode chosen on validation, side by side, with the mode
comparisons tested as one family; then stability, generalisation and cost."""

from __future__ import annotations

from pathlib import Path

from cxrlab.core.text import seconds, slug
from cxrlab.report import figures, findings
from cxrlab.report.cells import pairs_caption, pairs_table, runs_table, unit_caption
from cxrlab.report.document import Block, Figure, Findings, Paragraph, Subheading, table
from cxrlab.report.study_results import StudyResults
from cxrlab.training.records import RunRecord

INTRODUCTION = (
    "For each model, the run of each mode chosen on validation (lowest validation loss, ties by validation AUC), "
    "side by side: curves, test metrics with 95% intervals, paired tests on the same test images, and training "
    "time. Every test accuracy is at the run's decision threshold, chosen on its validation split (@thr; the most "
    "probable class for more than two classes); validation accuracy is at the argmax. Gap: the generalisation gap, train − validation accuracy (at the argmax) at the kept epoch, in "
    "percentage points. Stability: mean absolute epoch-to-epoch change of the validation loss over the last half "
    "of training (lower is steadier)."
)


def section_modes(study: StudyResults, out: Path) -> list[Block]:
    blocks: list[Block] = [Paragraph(INTRODUCTION)]
    if not study.pretrained_models:
        blocks.append(
            Findings(
                findings.nothing_to_report(
                    "fine-tuned, frozen or gradual runs, only from-scratch ones, so no modes to compare"
                )
            )
        )
    all_rows = []
    for model in study.pretrained_models:
        chosen = study.chosen_for(model)
        rows = [study.row(r) for r in chosen]
        all_rows += rows
        blocks += _model_blocks(study, model, chosen, out)
    if study.baseline is not None:
        all_rows.append(study.row(study.baseline))
    if all_rows:
        blocks.append(Subheading("Stability, generalisation and cost"))
        blocks.append(Findings(findings.curve_findings(all_rows)))
    blocks += training_time_blocks(study, out)
    chosen_all = study.chosen()
    if len(chosen_all) > 1:
        rows = [study.row(r) for r in chosen_all]
        columns, cells = runs_table(rows, study.sets)
        blocks.append(table(f"All models and modes: the run of each ({unit_caption(rows)})", columns, cells))
    return blocks


def _model_blocks(study: StudyResults, model: str, chosen: list[RunRecord], out: Path) -> list[Block]:
    rows = [study.row(r) for r in chosen]
    pairs = study.model_pairs(model)
    blocks: list[Block] = [Subheading(model), Findings(findings.mode_findings(model, rows, pairs, study.sets))]
    baseline = study.baseline
    shown = chosen + ([baseline] if baseline is not None and baseline not in chosen else [])
    title = f"{model}: training curves by mode" + (
        ", with the from-scratch baseline" if len(shown) > len(chosen) else ""
    )
    path = figures.save_png(
        figures.history_overlay_figure(shown, [study.labels[r.run_id] for r in shown], title),
        out / f"modes-curves-{slug(model)}.png",
    )
    blocks.append(
        Figure(path, f"Validation (solid) and train (dashed) loss and accuracy per epoch of {model} in each mode.")
    )
    columns, cells = runs_table(rows, study.sets)
    blocks.append(table(f"{model}: the run of each mode ({unit_caption(rows)})", columns, cells))
    if pairs:
        columns, cells = pairs_table(pairs, study.sets)
        caption = f"{model}: paired tests between modes ({pairs_caption(pairs)}; Holm's adjustment over the study's mode comparisons)"
        blocks.append(table(caption, columns, cells))
    return blocks


def training_time_blocks(study: StudyResults, out: Path) -> list[Block]:
    """The training time of every run: the figure (names shortened where long) and the table
    of full names beside it."""
    runs = study.runs
    path = figures.save_png(
        figures.training_time_figure(
            [study.labels[r.run_id] for r in runs],
            [r.scores.train_seconds for r in runs],
            [r.config.mode for r in runs],
            "Training time of every run",
        ),
        out / "training-time.png",
    )
    cells = [[study.labels[r.run_id], r.run_id, seconds(r.scores.train_seconds)] for r in runs]
    return [
        Figure(
            path, "Training time of every run in the study (fitting: every epoch, plus computing frozen features once)."
        ),
        table("Training time of every run, by its full name", ["run", "run directory", "training time"], cells),
    ]
