"""Section F, what transferred: freeze depth, partial transfer and weight statistics against the
pretrained fine-tune and training from scratch, convergence, data size and layer similarity,
each part drawn from the runs that exist (``cxrlab.report.transfer_runs``)."""

from __future__ import annotations

import math
from pathlib import Path

from cxrlab.core.text import format_value, seconds, slug
from cxrlab.evaluate.layer_figures import convergence_figure
from cxrlab.report import figures, transfer_findings
from cxrlab.report.analysis import RunAnalysis
from cxrlab.report.cells import pairs_caption, pairs_table, rule_tag, time_cell, unit_caption
from cxrlab.report.document import Block, Figure, Findings, Paragraph, Subheading, table
from cxrlab.report.formatting import decimal, number_ci, percent_ci
from cxrlab.report.sections.transfer_layers import similarity_blocks
from cxrlab.report.transfer_figures import FULL_FINETUNE, Line, Point, data_size_figure, freeze_depth_figure
from cxrlab.report.transfer_findings import cost, cost_words, in_cpu_time
from cxrlab.report.transfer_runs import TRANSFER_FAMILY, TransferResults, freeze_depth
from cxrlab.training.records import RunRecord

ABSENT = (
    "This study has no runs that vary what transferred: runs with --freeze-blocks or --transfer-blocks, weights "
    "imagenet-stats (or FILE-stats), a train_fraction below 1, or two modes whose histories record validation AUC "
    "would fill this section (`cxrlab study transfer` runs them all)."
)
INTRODUCTION = (
    "What of the pretrained network carried over, after Raghu et al. (Transfusion, 2019): how deep the pretrained "
    "stages can stay frozen, whether the first stages alone or only the weights' scale (each tensor drawn from a "
    "normal with the pretrained tensor's mean and standard deviation) do as well, how fast each start converges, "
    "and how the results move with the number of training images. Where several runs are the same variant (other "
    "settings or seeds), the one with the lowest validation loss stands for it; the test split chooses nothing. "
    "This study varies: {varies}."
)


def section_transfer(transfer: TransferResults, out: Path) -> list[Block]:
    if not transfer.varies:
        return [Paragraph(ABSENT)]
    blocks: list[Block] = [Paragraph(INTRODUCTION.format(varies=", ".join(transfer.varies)))]
    for model in transfer.models:
        blocks += freeze_blocks(transfer, model, out)
    blocks += init_blocks(transfer)
    blocks += convergence_blocks(transfer, out)
    blocks += size_blocks(transfer, out)
    blocks += similarity_blocks(transfer, out)
    return blocks


# --- freeze depth -------------------------------------------------------------------------------


def freeze_blocks(transfer: TransferResults, model: str, out: Path) -> list[Block]:
    study = transfer.study
    depths = transfer.freeze_points(model)
    if not depths:
        return []
    stages = transfer.stages(model) or max(freeze_depth(r) for r in depths)
    full, frozen = transfer.pretrained(model), transfer.frozen(model)
    deep = transfer.deep_freeze.get(model)
    ends = [(FULL_FINETUNE, full)] if full is not None else []
    shown = ends + [(float(freeze_depth(r)), r) for r in depths]
    rows = [(x, r) for x, r in shown] + ([(float(stages), frozen)] if frozen is not None else [])
    cpu = in_cpu_time([study.row(r) for _, r in rows])
    line = Line(
        f"{model}, first K stages frozen",
        [Point(x, study.row(r).test.accuracy, cost(study.row(r), cpu)) for x, r in shown],
        Point(float(stages), study.row(frozen).test.accuracy, cost(study.row(frozen), cpu)) if frozen else None,
        f"{model}, fixed feature extractor (frozen mode)",
    )
    figure = freeze_depth_figure([line], stages, cost_words(cpu))
    path = figures.save_png(figure, out / f"transfer-freeze-depth-{slug(model)}.png")
    deep_row = None
    if deep is not None:
        deep_row = (freeze_depth(deep), study.row(deep), transfer.pair_of(deep))
    sentences = transfer_findings.freeze_findings(
        model,
        [(freeze_depth(r), study.row(r)) for r in depths],
        study.row(full) if full is not None else None,
        study.row(frozen) if frozen is not None else None,
        stages,
        deep_row,
    )
    return [
        Subheading(f"Freeze depth: {model}"),
        Findings(sentences),
        Figure(
            path,
            f"Test accuracy with its 95% interval, and {cost_words(cpu)}, of {model} against the number of stages frozen "
            "after the stem: the full fine-tune at the left, the fixed feature extractor (frozen mode, hollow) at the "
            "right.",
        ),
        _freeze_table(transfer, model, rows, stages),
    ]


def _freeze_table(transfer: TransferResults, model: str, rows: list[tuple[float, RunRecord]], stages: int):
    analyses = [transfer.study.row(r) for _, r in rows]
    tag = rule_tag(analyses)
    columns = ["K (stages frozen after the stem)", "run", f"test accuracy {tag} (95% CI)", "AUC (95% CI)"]
    columns += ["training time (CPU)", "trainable parameters", "validation loss", "AUC converged after"]
    cells = [
        [
            _depth_cell(x, r, stages),
            transfer.label(r),
            percent_ci(a.test.accuracy),
            number_ci(a.test.roc_auc),
            time_cell(a),
            _count(r.scores.trainable_params),
            decimal(a.val_loss),
            seconds(r.scores.converged_auc_seconds),
        ]
        for (x, r), a in zip(rows, analyses)
    ]
    return table(f"{model}: freeze depth ({unit_caption(analyses)})", columns, cells)


def _count(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"


def _depth_cell(x: float, run: RunRecord, stages: int) -> str:
    if x == FULL_FINETUNE:
        return "none (full fine-tune)"
    if run.config.mode == "frozen":
        return f"{stages} (frozen mode)"
    return str(freeze_depth(run))


# --- partial transfer and weight statistics -------------------------------------------------------


def init_blocks(transfer: TransferResults) -> list[Block]:
    """The pretrained fine-tune, each partial transfer, statistics init, random init and deep
    freeze, and the from-scratch baseline: a table with intervals and the family of tests."""
    study = transfer.study
    models = [m for m in transfer.models if len(transfer.init_rows(m)) > 1 and transfer.compared(m)]
    if not models:
        return []
    blocks: list[Block] = [Subheading("Partial transfer and weight statistics against pretrained and scratch")]
    sentences = []
    for model in models:
        reference = transfer.pretrained(model)
        compared = [(_labelled(transfer, r), transfer.pair_of(r)) for r in transfer.compared(model)]
        sentences += transfer_findings.init_findings(
            model, _labelled(transfer, reference) if reference else None, compared, study.sets
        )
    if transfer.pairs:
        sentences += [transfer_findings.family_tally(transfer.pairs, name, role) for name, role in study.sets.items()]
    blocks.append(Findings(sentences))
    rows = [_labelled(transfer, r) for m in models for r in transfer.init_rows(m)]
    columns = ["run", f"test accuracy {rule_tag(rows)} (95% CI)", "AUC (95% CI)", "training time (CPU)"]
    columns += ["init", "trainable parameters"]
    cells = [
        [
            a.label,
            percent_ci(a.test.accuracy),
            number_ci(a.test.roc_auc),
            time_cell(a),
            r.scores.init or "–",
            _count(r.scores.trainable_params),
        ]
        for a, r in zip(rows, [r for m in models for r in transfer.init_rows(m)])
    ]
    blocks.append(
        table(f"What each run started from, on the whole training split ({unit_caption(rows)})", columns, cells)
    )
    if transfer.pairs:
        columns, cells = pairs_table(transfer.pairs, study.sets)
        size = next((r.adjustment.size for p in transfer.pairs for r in p.results.values() if r.adjustment), 1)
        blocks.append(
            table(
                f"Each against the pretrained fine-tune ({pairs_caption(transfer.pairs)}; Holm's adjustment over the "
                f"{size} comparison{'s' if size != 1 else ''} of the family “{TRANSFER_FAMILY}”)",
                columns,
                cells,
            )
        )
    return blocks


def _labelled(transfer: TransferResults, run: RunRecord) -> RunAnalysis:
    """The run's analysis under section F's name for it."""
    return transfer.study.row(run).model_copy(update=dict(label=transfer.label(run)))


# --- convergence ---------------------------------------------------------------------------------


def convergence_blocks(transfer: TransferResults, out: Path) -> list[Block]:
    runs = transfer.convergence_runs()
    if not runs:
        return []
    labels = {r.run_id: transfer.label(r) for r in runs}
    blocks: list[Block] = [Subheading("Convergence")]
    blocks.append(Findings(transfer_findings.convergence_findings(runs, labels)))
    drawn = [r for r in runs if any(e.val_auc is not None and math.isfinite(e.val_auc) for e in r.epochs)]
    if drawn:
        path = figures.save_png(
            convergence_figure(drawn, [labels[r.run_id] for r in drawn]), out / "transfer-convergence.png"
        )
        blocks.append(
            Figure(
                path,
                "Validation AUC after each epoch against the training seconds spent by its end (frozen features or "
                "activations included); circles: where each run came within 0.005 of its best validation AUC.",
            )
        )
    columns = [
        "run",
        "epochs",
        "kept epoch",
        "loss within 5% of lowest: epoch",
        "after",
        "AUC within 0.005 of best: epoch",
    ]
    columns += ["after", "best validation AUC", "training time (CPU)"]
    cells = []
    for run in runs:
        m = run.scores
        aucs = [e.val_auc for e in run.epochs if e.val_auc is not None and math.isfinite(e.val_auc)]
        cells.append(
            [
                labels[run.run_id],
                m.epochs_run,
                m.best_epoch,
                format_value(m.converged_epoch),
                seconds(m.converged_seconds),
                format_value(m.converged_auc_epoch),
                seconds(m.converged_auc_seconds),
                f"{max(aucs):.3f}" if aucs else "–",
                time_cell(transfer.study.row(run)),
            ]
        )
    blocks.append(table("Convergence of each start, read from the validation split", columns, cells))
    return blocks


# --- data size -------------------------------------------------------------------------------------


def size_blocks(transfer: TransferResults, out: Path) -> list[Block]:
    lines = transfer.size_lines()
    if not lines:
        return []
    study = transfer.study
    rows = {label: [study.row(r) for r in runs] for label, runs in lines.items()}
    figure_lines = [
        Line(label, [Point(float(a.n_train), a.test.accuracy, a.train_seconds, a.test.roc_auc) for a in analyses])
        for label, analyses in rows.items()
    ]
    path = figures.save_png(data_size_figure(figure_lines), out / "transfer-data-size.png")
    every = [a for analyses in rows.values() for a in analyses]
    tag = rule_tag(every)
    columns = ["line", "train fraction", "training images", f"test accuracy {tag} (95% CI)", "AUC (95% CI)"]
    columns += ["training time (CPU)"]
    cells = [
        [
            label,
            format_value(run.config.train_fraction),
            a.n_train,
            percent_ci(a.test.accuracy),
            number_ci(a.test.roc_auc),
            time_cell(a),
        ]
        for label, runs in lines.items()
        for run, a in zip(runs, rows[label])
    ]
    return [
        Subheading("Data size"),
        Paragraph(
            "Each share of the training split is a class-stratified, patient-grouped subset, nested in the larger "
            "ones; the validation and test splits are the same for every size."
        ),
        Findings(transfer_findings.size_findings(rows)),
        Figure(path, "Test accuracy and AUC, with 95% intervals, against the number of training images."),
        table(f"Data size ({unit_caption(every)})", columns, cells),
    ]
