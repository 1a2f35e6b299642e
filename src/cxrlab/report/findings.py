"""Findings: sentences built from a study's numbers, never fixed text.

Each function takes the dicts of ``cxrlab.report.analysis`` (``run_analysis`` per run,
``paired_comparison`` per pair) and returns a list of sentences. A difference is called
real only when McNemar's test says so at 5%; otherwise the sentence says it is within the
noise of the test set, with its interval. Every function copes with having nothing to say.
"""

from __future__ import annotations

from cxrlab.core.modes import mode_phrase, mode_title
from cxrlab.report.formatting import missing, p_statement, percent, percent_ci, points, points_ci, ratio, seconds

ALPHA = 0.05


def nothing_to_report(what: str) -> list[str]:
    return [f"This study has no {what}, so there is nothing to report here."]


def significance(pair: dict) -> str:
    """``a significant difference (McNemar p = 0.003)`` or the words for noise."""
    if pair["p_value"] < ALPHA:
        return f"a significant difference at 5% (McNemar {p_statement(pair['p_value'])})"
    return (
        f"within the noise of {pair['n']} test images (McNemar {p_statement(pair['p_value'])}: "
        f"no significant difference at 5%)"
    )


def oriented(pair: dict, first: str) -> dict:
    """``pair`` read with run ``first`` as A (the difference's sign and the counts swapped)."""
    if pair["a"] == first:
        return pair
    flipped = dict(
        pair,
        a=pair["b"],
        b=pair["a"],
        name_a=pair["name_b"],
        name_b=pair["name_a"],
        a_only=pair["b_only"],
        b_only=pair["a_only"],
    )
    for key in ("accuracy_difference", "auc_difference"):
        if pair.get(key):
            d = pair[key]
            flipped[key] = {"estimate": -d["estimate"], "low": -d["high"], "high": -d["low"]}
    return flipped


def _ranked(rows: list[dict]) -> list[dict]:
    """Rows by test accuracy, then AUC (a reading of the results, not a selection)."""
    return sorted(rows, key=lambda r: (-r["accuracy"]["estimate"], -_value(r["roc_auc"]["estimate"]), r["run"]))


def _value(x) -> float:
    return -1.0 if missing(x) else float(x)


def _find_pair(pairs: list[dict], a: str, b: str) -> dict | None:
    for pair in pairs:
        if {pair["a"], pair["b"]} == {a, b}:
            return oriented(pair, a)
    return None


def mode_findings(model: str, rows: list[dict], pairs: list[dict]) -> list[str]:
    """Which mode of ``model`` won on the test split, by how much, whether significant, and at
    what training-time cost. ``rows`` hold one selected run per mode."""
    if not rows:
        return nothing_to_report(f"runs of {model}")
    if len(rows) == 1:
        only = rows[0]
        return [
            f"{model} ran only as {mode_title(only['mode'])} (test accuracy {percent_ci(only['accuracy'])}); "
            "there is no other mode of it to compare with."
        ]
    ranked = _ranked(rows)
    winner, runner_up = ranked[0], ranked[1]
    sentences = [
        f"For {model}, {mode_phrase(winner['mode'])} reached the highest test accuracy, "
        f"{percent_ci(winner['accuracy'])}."
    ]
    pair = _find_pair(pairs, winner["run"], runner_up["run"])
    if pair is not None:
        sentences.append(
            f"Against {mode_phrase(runner_up['mode'])} ({percent(runner_up['accuracy']['estimate'])}) the difference is "
            f"{points_ci(pair['accuracy_difference'])}: {significance(pair)}."
        )
    sentences.append(_time_sentence(winner, runner_up))
    for other in ranked[2:]:
        pair = _find_pair(pairs, winner["run"], other["run"])
        if pair is not None:
            sentences.append(
                f"Against {mode_phrase(other['mode'])} ({percent(other['accuracy']['estimate'])}): "
                f"{points_ci(pair['accuracy_difference'])}, {significance(pair)}."
            )
    return sentences


def _time_sentence(winner: dict, other: dict) -> str:
    a, b = winner.get("train_seconds"), other.get("train_seconds")
    if missing(a) or missing(b) or not b:
        return "Training times were not recorded for both."
    if a >= b:
        return (
            f"It cost {seconds(a)} of training against {seconds(b)} for {mode_phrase(other['mode'])}: "
            f"{ratio(a, b)} the time."
        )
    return f"It was also the cheaper of the two: {seconds(a)} of training against {seconds(b)} ({ratio(b, a)} less)."


def frozen_findings(frozen: list[dict], finetuned: list[dict]) -> list[str]:
    """The fixed feature extractor of each model: its cost against fine-tuning the same model,
    and its accuracy. ``frozen`` and ``finetuned`` hold one selected run per model."""
    if not frozen:
        return nothing_to_report("fixed-feature-extractor (frozen) runs")
    sentences = []
    by_model = {r["model"]: r for r in finetuned}
    for row in frozen:
        text = (
            f"The fixed feature extractor of {row['model']} trained its head in {seconds(row['train_seconds'])} "
            f"(backbone features computed once, then {row['epochs_run']} epochs on the cached features) and "
            f"reached {percent_ci(row['accuracy'])} test accuracy."
        )
        tuned = by_model.get(row["model"])
        if tuned is not None and not missing(tuned.get("train_seconds")) and row.get("train_seconds"):
            text += (
                f" Fine-tuning {row['model']} took {seconds(tuned['train_seconds'])}, "
                f"{ratio(tuned['train_seconds'], row['train_seconds'])} as long, for "
                f"{percent_ci(tuned['accuracy'])}."
            )
        sentences.append(text)
    return sentences


def baseline_findings(rows: list[dict], baseline: dict | None, pairs: list[dict]) -> list[str]:
    """Each selected transfer-learning run against the from-scratch baseline, and a tally."""
    if baseline is None:
        return nothing_to_report("from-scratch runs, hence no baseline to test against")
    others = [r for r in rows if r["run"] != baseline["run"]]
    if not others:
        return [
            f"The from-scratch baseline ({baseline['label']}) is the only run: there is nothing to test "
            f"against it. Its test accuracy is {percent_ci(baseline['accuracy'])}."
        ]
    sentences = [
        f"The from-scratch baseline, {baseline['label']}, reached {percent_ci(baseline['accuracy'])} "
        f"test accuracy in {seconds(baseline['train_seconds'])}."
    ]
    better = worse = 0
    for row in _ranked(others):
        pair = _find_pair(pairs, row["run"], baseline["run"])
        if pair is None:
            sentences.append(f"{row['label']} was scored on other test images than the baseline: not paired.")
            continue
        significant = pair["p_value"] < ALPHA
        better += significant and pair["a_only"] > pair["b_only"]
        worse += significant and pair["a_only"] < pair["b_only"]
        sentences.append(
            f"{row['label']}: {percent(row['accuracy']['estimate'])}, "
            f"{points_ci(pair['accuracy_difference'])} against the baseline, {significance(pair)}; "
            f"{ratio(row.get('train_seconds'), baseline.get('train_seconds'))} its training time."
        )
    tested = len([r for r in others if _find_pair(pairs, r["run"], baseline["run"])])
    summary = f"{better} of {tested} transfer-learning runs beat the baseline significantly at 5%"
    summary += f", {worse} did significantly worse" if worse else ""
    summary += ", and the rest are not distinguishable from it on this test split." if tested - better - worse else "."
    return sentences + [summary]


def curve_findings(rows: list[dict]) -> list[str]:
    """The largest generalisation gap and the steadiest and least steady validation curves."""
    sentences = []
    gaps = [r for r in rows if not missing(r.get("generalisation_gap"))]
    if gaps:
        widest = max(gaps, key=lambda r: r["generalisation_gap"])
        lowest = min(gaps, key=lambda r: r["generalisation_gap"])
        if widest["generalisation_gap"] == lowest["generalisation_gap"]:
            sentences.append(
                f"Every run has the same generalisation gap (train − validation accuracy at the kept "
                f"epoch): {points(widest['generalisation_gap'])}."
            )
        else:
            sentences.append(
                f"Generalisation gap (train − validation accuracy at the kept epoch): from "
                f"{points(lowest['generalisation_gap'])} ({lowest['label']}) to "
                f"{points(widest['generalisation_gap'])} ({widest['label']}); a large positive gap "
                f"is overfitting."
            )
    steady = [r for r in rows if not missing(r.get("stability"))]
    if len(steady) >= 2:
        calm = min(steady, key=lambda r: r["stability"])
        rough = max(steady, key=lambda r: r["stability"])
        sentences.append(
            f"Steadiest validation loss over the last half of training: {calm['label']} (mean change "
            f"{calm['stability']:.4f} per epoch); least steady: {rough['label']} "
            f"({rough['stability']:.4f})."
        )
    elif not steady:
        sentences.append("No run trained for two epochs or more, so curve stability cannot be measured.")
    return sentences


def calibration_findings(rows: list[dict]) -> list[str]:
    rows = [r for r in rows if not missing(r.get("ece"))]
    if len(rows) < 2:
        return [f"{rows[0]['label']}'s expected calibration error is {rows[0]['ece']:.3f}."] if rows else []
    best = min(rows, key=lambda r: r["ece"])
    worst = max(rows, key=lambda r: r["ece"])
    return [
        f"Best calibrated: {best['label']} (expected calibration error {best['ece']:.3f}); least: "
        f"{worst['label']} ({worst['ece']:.3f})."
    ]


def sensitivity_findings(rows: list[dict]) -> list[str]:
    """For two classes: who misses the fewest sick patients, and at what cost to specificity."""
    rows = [r for r in rows if r.get("sensitivity") and not missing(r["sensitivity"]["estimate"])]
    if not rows:
        return []
    top = max(rows, key=lambda r: (r["sensitivity"]["estimate"], r["specificity"]["estimate"]))
    return [
        f"Highest sensitivity: {top['label']}, {percent_ci(top['sensitivity'])} of {top['positive_class']} "
        f"cases found, at a specificity of {percent_ci(top['specificity'])}."
    ]


def settings_findings(group: str, rows: list[dict]) -> list[str]:
    """How far test accuracy moves across the settings of one model and mode, against the
    width of one run's interval: is the table's ranking more than noise?"""
    if len(rows) < 2:
        return []
    accuracies = [r["accuracy"]["estimate"] for r in rows]
    widths = [r["accuracy"]["high"] - r["accuracy"]["low"] for r in rows if not missing(r["accuracy"]["low"])]
    spread = max(accuracies) - min(accuracies)
    text = (
        f"Across {len(rows)} settings of {group}, test accuracy ranges from {percent(min(accuracies))} to "
        f"{percent(max(accuracies))} ({100 * spread:.1f} points)"
    )
    if widths:
        half = sum(widths) / len(widths) / 2
        verdict = "less than" if spread < half else "more than"
        text += f"; one run's 95% interval is about ±{100 * half:.1f} points, so the spread is {verdict} that"
    return [text + "."]
