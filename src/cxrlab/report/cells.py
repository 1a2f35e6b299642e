"""Table cells built from the typed analyses: runs side by side, and pairs of runs.

Shared by the report and ``cxrlab compare``. Where runs were scored on external sets, their
columns (runs) or rows (pairs) stand beside the internal test's. Every accuracy names its
decision rule; captions say what the intervals resample.
"""

from __future__ import annotations

from cxrlab.core.text import percent, seconds
from cxrlab.report.analysis import RunAnalysis
from cxrlab.report.formatting import decimal, number_ci, p_value, percent_ci, points, points_ci
from cxrlab.report.pairs import PairedComparison
from cxrlab.report.scored import IMAGE, TEST
from cxrlab.report.wording import set_title, unit_words, verdict_short

THRESHOLD_WORDS = {
    "val-youden": "Youden's J",
    "val-balanced": "equal sensitivity and specificity",
    "0.5": "fixed at 0.5",
    "argmax": "the most probable class",
}


def rule_tag(rows: list[RunAnalysis]) -> str:
    """``@thr`` (at the threshold chosen on validation) or ``@argmax`` (more than two classes)."""
    return "@thr" if any(r.binary for r in rows) else "@argmax"


def threshold_cell(row: RunAnalysis) -> str:
    if row.threshold is None:
        return "argmax"
    return f"{row.threshold:.3f} ({THRESHOLD_WORDS.get(row.threshold_rule, row.threshold_rule)})"


def time_cell(row: RunAnalysis) -> str:
    """Wall time of training, its CPU seconds beside it, and a mark when the machine was loaded."""
    text = seconds(row.train_seconds)
    if row.train_cpu_seconds is not None:
        text += f" ({seconds(row.train_cpu_seconds)} CPU)"
    return text + (" †" if row.loaded else "")


def runs_table(rows: list[RunAnalysis], sets: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """One row per run: test numbers with 95% intervals, the threshold, cost and curves, then
    accuracy and AUC on each external set."""
    binary = all(r.binary for r in rows)
    tag = rule_tag(rows)
    columns = ["run", f"test accuracy {tag} (95% CI)", "AUC (95% CI)"]
    columns += [f"sensitivity {tag}", f"specificity {tag}"] if binary else ["balanced accuracy", "macro F1"]
    columns += ["threshold (chosen on validation)", "loss", "training time (CPU)", "gap (points)", "stability"]
    external = [name for name in (sets or {}) if name != TEST]
    for name in external:
        title = set_title(name, (sets or {})[name])
        columns += [f"{title}: accuracy {tag} (95% CI)", f"{title}: AUC"]
    cells = []
    for r in rows:
        row = [r.label, percent_ci(r.test.accuracy), number_ci(r.test.roc_auc)]
        if binary:
            row += [percent_ci(r.test.sensitivity), percent_ci(r.test.specificity)]
        else:
            row += [percent(r.test.balanced_accuracy), f"{r.test.macro_f1:.3f}"]
        gap = points(r.generalisation_gap).replace(" points", "")
        row += [threshold_cell(r), decimal(r.test.loss), time_cell(r), gap, decimal(r.stability)]
        for name in external:
            there = r.on(name)
            row += [percent_ci(there.accuracy), number_ci(there.roc_auc)] if there else ["–", "–"]
        cells.append(row)
    return columns, cells


def pairs_table(pairs: list[PairedComparison], sets: dict[str, str] | None = None) -> tuple[list[str], list[list[str]]]:
    """One row per pair and evaluation set: the discordant counts, the exact test clustered by
    patient with its Holm-adjusted p-value, the bootstrap interval of the accuracy difference,
    and the verdict (a difference claimed only where test and interval agree)."""
    roles = sets or {}
    columns = ["A", "B", "set", "A right, B wrong", "B right, A wrong", "p", "p adjusted (Holm)", "accuracy A − B"]
    columns += ["verdict"]
    cells = []
    for pair in pairs:
        for name, result in pair.results.items():
            adjusted = (
                f"{p_value(result.adjustment.p_adjusted)} (of {result.adjustment.size})" if result.adjustment else "–"
            )
            where = "internal test" if name == TEST else set_title(name, roles.get(name, "test"))
            cells.append(
                [
                    pair.name_a,
                    pair.name_b,
                    where,
                    str(result.a_only),
                    str(result.b_only),
                    p_value(result.p_value),
                    adjusted,
                    points_ci(result.accuracy_difference),
                    verdict_short(result, "A", "B"),
                ]
            )
    return columns, cells


def unit_caption(rows: list[RunAnalysis]) -> str:
    """What the intervals of ``rows`` resample, for a table's caption."""
    if not rows:
        return ""
    test = rows[0].test
    if test.unit == IMAGE:
        return f"intervals resample images: {unit_words(IMAGE, test.n, test.n_patients)}"
    return f"intervals resample patients: {unit_words(test.unit, test.n, test.n_patients)}"


def pairs_caption(pairs: list[PairedComparison]) -> str:
    """The test and the unit of the pairs' rows, for a table's caption."""
    first = next((r for p in pairs for r in p.results.values()), None)
    if first is None:
        return ""
    if first.unit == IMAGE:
        return "McNemar's exact test and the bootstrap of the difference, both over images (no patient ids)"
    return (
        "McNemar's exact test clustered by patient (sign flips of each patient's discordant count) and the "
        "bootstrap of the difference over patients"
    )
