"""``cxrlab compare``: runs side by side, with intervals and paired tests.

One row per run (test accuracy and AUC with 95% bootstrap intervals, sensitivity and
specificity with Wilson intervals, test loss, training time, generalisation gap, curve
stability) and one McNemar test per pair of runs on the same test images.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import write_json, write_text
from cxrlab.core.metrics import confusion_matrix
from cxrlab.evaluate.stats import LEVEL, N_BOOT
from cxrlab.report import figures
from cxrlab.report.analysis import paired_comparison, run_analysis, run_labels, scored_test
from cxrlab.report.formatting import decimal, markdown_table, number_ci, p_value, percent_ci, points, points_ci, seconds
from cxrlab.training.records import RunRecord, load_run


def compare_runs(run_dirs: list[str], out_dir: str | None = None, n_boot: int = N_BOOT, seed: int = 0) -> dict:
    """Compare finished runs scored on the same test images; with ``out_dir``, write
    comparison.md, comparison.json and the figures there. Returns the comparison as a dict."""
    if not run_dirs:
        raise CxrlabError("compare needs at least one run directory")
    runs = [load_run(d) for d in run_dirs]
    labels = run_labels(runs)
    pairs = [
        paired_comparison(runs[i], runs[j], labels[i], labels[j], n_boot=n_boot, seed=seed)
        for i in range(len(runs))
        for j in range(i + 1, len(runs))
    ]
    rows = [{"label": label, **run_analysis(run, n_boot=n_boot, seed=seed)} for run, label in zip(runs, labels)]
    result = {
        "n_test": rows[0]["n_test"],
        "level": LEVEL,
        "n_boot": n_boot,
        "runs": rows,
        "pairs": pairs,
        "figures": [],
    }
    if out_dir is not None:
        out = Path(out_dir)
        result["figures"] = [str(p.relative_to(out)) for p in comparison_figures(runs, labels, out)]
        write_json(out / "comparison.json", result)
        write_text(out / "comparison.md", comparison_markdown(result))
    return result


def runs_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """The comparison's columns and cells, one row per run (test numbers at 95%)."""
    binary = all(r["binary"] for r in rows)
    columns = ["run", "accuracy (95% CI)", "AUC (95% CI)"]
    columns += ["sensitivity (95% CI)", "specificity (95% CI)"] if binary else ["balanced accuracy", "macro F1"]
    columns += ["loss", "training time", "gap (points)", "stability"]
    cells = []
    for r in rows:
        row = [r["label"], percent_ci(r["accuracy"]), number_ci(r["roc_auc"])]
        if binary:
            row += [percent_ci(r["sensitivity"]), percent_ci(r["specificity"])]
        else:
            row += [f"{100 * r['balanced_accuracy']:.1f}%", f"{r['macro_f1']:.3f}"]
        gap = points(r["generalisation_gap"]).replace(" points", "")
        row += [decimal(r["test_loss"]), seconds(r["train_seconds"]), gap, decimal(r["stability"])]
        cells.append(row)
    return columns, cells


def pairs_table(pairs: list[dict]) -> tuple[list[str], list[list[str]]]:
    """One row per pair: the discordant counts, McNemar's exact p and the verdict, and the
    paired bootstrap interval of the accuracy difference."""
    columns = ["A", "B", "A right, B wrong", "B right, A wrong", "McNemar p", "accuracy A − B", "verdict"]
    cells = [
        [
            p["name_a"],
            p["name_b"],
            str(p["a_only"]),
            str(p["b_only"]),
            p_value(p["p_value"]),
            points_ci(p["accuracy_difference"]),
            p["verdict"],
        ]
        for p in pairs
    ]
    return columns, cells


def comparison_markdown(result: dict) -> str:
    """The comparison as Markdown: the runs table, the pairwise tests, and the figures."""
    count = len(result["runs"])
    lines = [
        f"# Comparison of {count} run{'s' if count != 1 else ''} on {result['n_test']} test images",
        "",
        "Accuracy, AUC, sensitivity, specificity and loss are on the test split. "
        f"Intervals are 95%: percentile bootstrap ({result['n_boot']} resamples) for accuracy, AUC and the "
        "accuracy differences; Wilson for sensitivity and specificity. Each run predicts at its own "
        "threshold and checkpoint, both chosen on its validation split. Gap: the generalisation gap, train − "
        "validation accuracy at the kept epoch, in points. Stability: mean absolute epoch-to-epoch change of the "
        "validation loss over the last half of training (lower is steadier).",
        "",
    ]
    columns, cells = runs_table(result["runs"])
    lines += [markdown_table(columns, cells), ""]
    if result["pairs"]:
        lines += [
            "## Paired tests on the same test images",
            "",
            "McNemar's exact test counts the images one run got right and the other wrong.",
            "",
        ]
        columns, cells = pairs_table(result["pairs"])
        lines += [markdown_table(columns, cells), ""]
        if len(result["pairs"]) > 1:
            lines += [
                f"{len(result['pairs'])} tests at 5% each: about one in twenty comparisons of equal runs "
                "reads as significant by chance.",
                "",
            ]
    if result["figures"]:
        lines += ["## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in result["figures"]] + [""]
    return "\n".join(lines)


def curve_inputs(runs: list[RunRecord], labels: list[str]) -> list[dict]:
    """The arrays the ROC, precision-recall and calibration figures take, one per run."""
    curves = []
    for run, label in zip(runs, labels):
        test = scored_test(run)
        point = None
        if test.binary and len(set(test.labels.tolist())) == 2:
            sick = test.labels == test.positive
            point = (
                float((test.predicted[~sick] == test.positive).mean()),
                float((test.predicted[sick] == test.positive).mean()),
            )
        curves.append(
            {
                "label": label,
                "labels": test.labels,
                "probs": test.probs,
                "classes": test.classes,
                "positive": test.positive,
                "operating_point": point,
            }
        )
    return curves


def comparison_figures(runs: list[RunRecord], labels: list[str], out: str | os.PathLike) -> list[Path]:
    """The overlay figures of a comparison, written as PNGs into ``out``."""
    out = Path(out)
    curves = curve_inputs(runs, labels)
    written = [
        figures.save_png(figures.history_overlay_figure(runs, labels, "Training curves"), out / "curves.png"),
        figures.save_png(figures.roc_figure(curves), out / "roc.png"),
        figures.save_png(figures.precision_recall_figure(curves), out / "precision_recall.png"),
        figures.save_png(figures.reliability_figure(curves), out / "calibration.png"),
        figures.save_png(
            figures.training_time_figure(labels, [r.scores.train_seconds for r in runs], [r.config.mode for r in runs]),
            out / "training_time.png",
        ),
    ]
    for i, (run, label) in enumerate(zip(runs, labels)):
        matrix = run_confusion(run)
        written.append(
            figures.save_png(
                figures.confusion_figure(matrix, run.classes, f"{label}: test confusion matrix"),
                out / f"confusion-{i + 1}.png",
            )
        )
    return written


def run_confusion(run: RunRecord) -> np.ndarray:
    """The test confusion matrix at the run's threshold (rows true, columns predicted)."""
    test = scored_test(run)
    return confusion_matrix(test.labels, test.predicted, len(test.classes))
