"""``cxrlab compare``: runs side by side, with intervals and paired tests.

One row per run (test accuracy and AUC with 95% intervals, sensitivity and specificity,
test loss, training time, generalisation gap, curve stability, and the external sets
beside the internal test) and one paired test per pair of runs and evaluation set. The
pairs of one comparison form one family: their p-values are adjusted together (Holm).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import write_json, write_text
from cxrlab.core.metrics import confusion_matrix
from cxrlab.evaluate.stats import LEVEL, N_BOOT
from cxrlab.report import curves, figures
from cxrlab.report.analysis import RunAnalysis, Typed, run_analysis, run_labels
from cxrlab.report.cells import pairs_caption, pairs_table, runs_table, unit_caption
from cxrlab.report.formatting import markdown_table
from cxrlab.report.pairs import PairedComparison, adjusted_pairs, paired_comparison
from cxrlab.report.scored import TEST, ScoredSet, evaluation_sets, scored_set
from cxrlab.training.records import RunRecord, load_run

FAMILY = "all pairs of the compared runs"


class Comparison(Typed):
    """Runs compared on their shared test images: ``comparison.json``."""

    n_test: int
    unit: str
    level: float
    n_boot: int
    sets: dict[str, str]  # evaluation set -> role
    runs: list[RunAnalysis]
    pairs: list[PairedComparison]
    figures: list[str] = Field(default_factory=list)


def compare_runs(
    run_dirs: list[str], out_dir: str | None = None, n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """Compare finished runs scored on the same test images; with ``out_dir``, write
    comparison.md, comparison.json and the figures there. Returns the comparison as a dict
    (``Comparison``'s fields)."""
    if not run_dirs:
        raise CxrlabError("compare needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    labels = run_labels(runs)
    scored = [{name: scored_set(run, name) for name in evaluation_sets(run)} for run in runs]
    sets: dict[str, str] = {}
    for run in runs:
        sets.update({k: v for k, v in evaluation_sets(run).items() if k not in sets})
    pairs = [
        paired_comparison((runs[i].run_id, runs[j].run_id), (labels[i], labels[j]), scored[i], scored[j], n_boot, seed)
        for i in range(len(runs))
        for j in range(i + 1, len(runs))
    ]
    for name in sets:
        pairs = adjusted_pairs(pairs, FAMILY, name)
    rows = [run_analysis(run, label, n_boot, seed, s) for run, label, s in zip(runs, labels, scored)]
    comparison = Comparison(
        n_test=rows[0].test.n, unit=rows[0].test.unit, level=LEVEL, n_boot=n_boot, sets=sets, runs=rows, pairs=pairs
    )
    if out_dir is not None:
        out = Path(out_dir)
        written = comparison_figures(runs, labels, [s[TEST] for s in scored], out)
        comparison = comparison.model_copy(update=dict(figures=[str(p.relative_to(out)) for p in written]))
        write_json(out / "comparison.json", comparison.model_dump())
        write_text(out / "comparison.md", comparison_markdown(comparison))
    return comparison.model_dump()


def comparison_markdown(result: Comparison | dict[str, Any]) -> str:
    """The comparison as Markdown: the runs table, the pairwise tests, and the figures."""
    comparison = result if isinstance(result, Comparison) else Comparison.model_validate(result)
    count = len(comparison.runs)
    lines = [
        f"# Comparison of {count} run{'s' if count != 1 else ''} on {comparison.n_test} test images",
        "",
        "Accuracy, AUC, sensitivity, specificity and loss are on the test split, at each run's own threshold and "
        "checkpoint, both chosen on its validation split (@thr; @argmax: the most probable class). Intervals are "
        f"95% percentile bootstrap intervals ({comparison.n_boot} resamples; {unit_caption(comparison.runs)}). "
        "Gap: the generalisation gap, train − validation accuracy at the kept epoch, in points. Stability: mean "
        "absolute epoch-to-epoch change of the validation loss over the last half of training (lower is steadier).",
        "",
    ]
    columns, cells = runs_table(comparison.runs, comparison.sets)
    lines += [markdown_table(columns, cells), ""]
    if comparison.pairs:
        tests = sum(1 for p in comparison.pairs if TEST in p.results)
        lines += [
            "## Paired tests on the same images",
            "",
            f"{pairs_caption(comparison.pairs)}. The {tests} pair{'s' if tests != 1 else ''} on each set form one "
            "family, adjusted with Holm's method. A difference is claimed only where the adjusted McNemar p-value is "
            "below 0.05 and the interval of the difference excludes zero.",
            "",
        ]
        columns, cells = pairs_table(comparison.pairs, comparison.sets)
        lines += [markdown_table(columns, cells), ""]
    if comparison.figures:
        lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in comparison.figures] + [""]
    return "\n".join(lines)


def comparison_figures(
    runs: list[RunRecord], labels: list[str], tests: list[ScoredSet], out: str | os.PathLike
) -> list[Path]:
    """The overlay figures of a comparison, written as PNGs into ``out``."""
    out = Path(out)
    inputs = [curves.curve_input(test, label) for test, label in zip(tests, labels)]
    written = [
        figures.save_png(figures.history_overlay_figure(runs, labels, "Training curves"), out / "curves.png"),
        figures.save_png(curves.roc_figure(inputs), out / "roc.png"),
        figures.save_png(curves.precision_recall_figure(inputs), out / "precision_recall.png"),
        figures.save_png(curves.reliability_figure(inputs), out / "calibration.png"),
        figures.save_png(
            figures.training_time_figure(labels, [r.scores.train_seconds for r in runs], [r.config.mode for r in runs]),
            out / "training_time.png",
        ),
    ]
    for i, (test, label) in enumerate(zip(tests, labels)):
        matrix = confusion_matrix(test.labels, test.predicted, len(test.classes))
        written.append(
            figures.save_png(
                figures.confusion_figure(matrix, test.classes, f"{label}: test confusion matrix"),
                out / f"confusion-{i + 1}.png",
            )
        )
    return written


def run_confusion(run: RunRecord) -> np.ndarray:
    """The test confusion matrix at the run's threshold (rows true, columns predicted)."""
    test = scored_set(run)
    return confusion_matrix(test.labels, test.predicted, len(test.classes))
