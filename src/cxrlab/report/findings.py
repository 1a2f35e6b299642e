"""Findings: sentences built from a study's numbers, never fixed text.

Each function takes the typed analyses of ``cxrlab.report.analysis`` (one ``RunAnalysis`` per
run) and the adjusted paired comparisons of ``cxrlab.report.pairs``, and returns a list of
sentences. Verdicts are worded by ``cxrlab.report.wording``: a difference is claimed only
when the adjusted test and the interval agree. Where runs were also scored on external sets,
each conclusion says whether it holds there. Every function copes with having nothing to say.
"""

from __future__ import annotations

from cxrlab.core.modes import mode_phrase, mode_title
from cxrlab.core.text import missing, percent, seconds
from cxrlab.report.analysis import RunAnalysis
from cxrlab.report.formatting import number_ci, percent_ci, points, ratio, signed_ci
from cxrlab.report.pairs import PairedComparison
from cxrlab.report.scored import TEST
from cxrlab.report.wording import claimed, holds, set_title, spread_verdict, verdict


def nothing_to_report(what: str) -> list[str]:
    return [f"This study has no {what}, so there is nothing to report here."]


def ranked(rows: list[RunAnalysis], name: str = TEST) -> list[RunAnalysis]:
    """Rows by accuracy on set ``name``, then AUC (a reading of the results, not a selection)."""
    scored = [r for r in rows if r.on(name) is not None]
    return sorted(scored, key=lambda r: (-r.at(name).accuracy.estimate, -_value(r.at(name).roc_auc.estimate), r.run))


def _value(x) -> float:
    return -1.0 if missing(x) else float(x)


def find_pair(pairs: list[PairedComparison], a: str, b: str) -> PairedComparison | None:
    """The comparison of runs ``a`` and ``b``, read with ``a`` first."""
    for pair in pairs:
        if {pair.a, pair.b} == {a, b}:
            return pair.oriented(a)
    return None


def mode_findings(model: str, rows: list[RunAnalysis], pairs: list[PairedComparison], sets: dict) -> list[str]:
    """Which mode of ``model`` won on the test split, by how much, whether that is claimed, at
    what training-time cost, and whether it holds on each external set. ``rows`` hold one
    selected run per mode."""
    if not rows:
        return nothing_to_report(f"runs of {model}")
    if len(rows) == 1:
        only = rows[0]
        return [
            f"{model} ran only as {mode_title(only.mode)} (test accuracy {percent_ci(only.test.accuracy)}); "
            "there is no other mode of it to compare with."
        ]
    order = ranked(rows)
    winner, runner_up = order[0], order[1]
    sentences = [
        f"For {model}, {mode_phrase(winner.mode)} reached the highest test accuracy, {percent_ci(winner.test.accuracy)}."
    ]
    for i, other in enumerate(order[1:]):
        pair = find_pair(pairs, winner.run, other.run)
        if pair is None:
            continue
        lead = f"Against {mode_phrase(other.mode)} ({percent(other.test.accuracy.estimate)})"
        sentences.append(f"{lead}: {verdict(pair.at(TEST), mode_title(winner.mode), mode_title(other.mode))}.")
        if i == 0:
            sentences.append(_time_sentence(winner, runner_up))
    for name, role in sets.items():
        if name != TEST:
            sentences += _mode_elsewhere(rows, pairs, winner, name, role)
    return sentences


def _mode_elsewhere(
    rows: list[RunAnalysis], pairs: list[PairedComparison], winner: RunAnalysis, name: str, role: str
) -> list[str]:
    """The internal winner's comparisons read again on external set ``name``."""
    order = ranked(rows, name)
    if len(order) < 2:
        return []
    top = order[0]
    text = (
        f"On {set_title(name, role)}, {mode_phrase(top.mode)} reached the highest accuracy, "
        f"{percent_ci(top.at(name).accuracy)}."
    )
    for other in rows:
        pair = find_pair(pairs, winner.run, other.run) if other.run != winner.run else None
        there = pair.on(name) if pair is not None else None
        if pair is None or there is None:
            continue
        text += (
            f" There, {mode_title(winner.mode)} against {mode_title(other.mode)}: "
            f"{verdict(there, mode_title(winner.mode), mode_title(other.mode))}; "
            f"the internal test's conclusion {holds(pair.at(TEST), there)}."
        )
    return [text]


def _time_sentence(winner: RunAnalysis, other: RunAnalysis) -> str:
    # On a loaded machine wall time swells with whatever else ran; CPU seconds much less.
    cpu = (winner.loaded or other.loaded) and None not in (winner.train_cpu_seconds, other.train_cpu_seconds)
    a, b = (winner.train_cpu_seconds, other.train_cpu_seconds) if cpu else (winner.train_seconds, other.train_seconds)
    kind = "CPU time (the machine was shared while they ran, which inflates wall time)" if cpu else "training"
    if a is None or b is None or missing(a) or missing(b) or not b or not a:
        return "Training times were not recorded for both."
    if a >= b:
        return f"It cost {seconds(a)} of {kind} against {seconds(b)} for {mode_phrase(other.mode)}: {ratio(a, b)} the time."
    return f"It was also the cheaper of the two: {seconds(a)} of {kind} against {seconds(b)} ({ratio(b, a)} less)."


def frozen_findings(frozen: list[RunAnalysis], finetuned: list[RunAnalysis]) -> list[str]:
    """The fixed feature extractor of each model: its cost against fine-tuning the same model,
    and its accuracy. ``frozen`` and ``finetuned`` hold one selected run per model."""
    if not frozen:
        return nothing_to_report("fixed-feature-extractor (frozen) runs")
    sentences = []
    by_model = {r.model: r for r in finetuned}
    for row in frozen:
        text = (
            f"The fixed feature extractor of {row.model} trained its head in {seconds(row.train_seconds)} "
            f"(backbone features computed once, then {row.epochs_run} epochs on the cached features) and "
            f"reached {percent_ci(row.test.accuracy)} test accuracy."
        )
        tuned = by_model.get(row.model)
        if tuned is not None and not missing(tuned.train_seconds) and row.train_seconds:
            text += (
                f" Fine-tuning {row.model} took {seconds(tuned.train_seconds)}, "
                f"{ratio(tuned.train_seconds, row.train_seconds)} as long, for {percent_ci(tuned.test.accuracy)}."
            )
        sentences.append(text)
    return sentences


def baseline_findings(
    rows: list[RunAnalysis], baseline: RunAnalysis | None, pairs: list[PairedComparison], sets: dict
) -> list[str]:
    """Each selected transfer-learning run against the from-scratch baseline, on every set, and
    a tally per set that counts only claimed differences (adjusted test and interval agree)."""
    if baseline is None:
        return nothing_to_report("from-scratch runs, hence no baseline to test against")
    others = [r for r in rows if r.run != baseline.run]
    if not others:
        return [
            f"The from-scratch baseline ({baseline.label}) is the only run: there is nothing to test "
            f"against it. Its test accuracy is {percent_ci(baseline.test.accuracy)}."
        ]
    sentences = [
        f"The from-scratch baseline, {baseline.label}, reached {percent_ci(baseline.test.accuracy)} "
        f"test accuracy in {seconds(baseline.train_seconds)}."
    ]
    for row in ranked(others):
        pair = find_pair(pairs, row.run, baseline.run)
        if pair is None:
            sentences.append(f"{row.label} was scored on other test images than the baseline: not paired.")
            continue
        text = (
            f"{row.label}: {percent(row.test.accuracy.estimate)}, "
            f"{verdict(pair.at(TEST), row.label, 'the baseline')}; "
            f"{ratio(row.train_seconds, baseline.train_seconds)} its training time."
        )
        sentences.append(text + elsewhere(pair, sets, row.label, "the baseline"))
    return sentences + [_tally(pairs, others, baseline, name, role) for name, role in sets.items()]


def elsewhere(pair: PairedComparison, sets: dict[str, str], label: str, other: str) -> str:
    """The pair's verdict on each external set, and whether the internal test's holds there."""
    text = ""
    for name, role in sets.items():
        there = pair.on(name)
        if name != TEST and there is not None:
            text += (
                f" On {set_title(name, role)}: {verdict(there, label, other)}; "
                f"the internal test's conclusion {holds(pair.at(TEST), there)}."
            )
    return text


def _tally(pairs: list[PairedComparison], others: list[RunAnalysis], baseline: RunAnalysis, name, role) -> str:
    found = [find_pair(pairs, r.run, baseline.run) for r in others]
    results = [p.at(name) for p in found if p is not None and p.on(name) is not None]
    better = sum(1 for r in results if claimed(r) and r.a_better)
    worse = sum(1 for r in results if claimed(r) and not r.a_better)
    where = "the internal test split" if name == TEST else set_title(name, role)
    text = f"On {where}, {better} of {len(results)} transfer-learning runs beat the baseline"
    text += f", {worse} did worse" if worse else ""
    rest = len(results) - better - worse
    text += f", and {rest} {'is' if rest == 1 else 'are'} not distinguishable from it" if rest else ""
    adjusted = next((r.adjustment for r in results if r.adjustment), None)
    size = f" after Holm's adjustment over {adjusted.size} tests" if adjusted and adjusted.size > 1 else ""
    return text + f" (a difference counts only where the test reaches 5%{size} and the interval excludes zero)."


def curve_findings(rows: list[RunAnalysis]) -> list[str]:
    """The largest generalisation gap and the steadiest and least steady validation curves."""
    sentences = []
    gaps = [(r.generalisation_gap, r.label) for r in rows if r.generalisation_gap is not None]
    gaps = [(gap, label) for gap, label in gaps if not missing(gap)]
    if gaps:
        (widest, wide_label), (lowest, low_label) = max(gaps), min(gaps)
        if widest == lowest:
            sentences.append(
                f"Every run has the same generalisation gap (train − validation accuracy at the argmax, at the "
                f"kept epoch): {points(widest)}."
            )
        else:
            sentences.append(
                f"Generalisation gap (train − validation accuracy at the argmax, at the kept epoch): from "
                f"{points(lowest)} ({low_label}) to {points(widest)} ({wide_label}); a large positive gap is overfitting."
            )
    steady = [(r.stability, r.label) for r in rows if r.stability is not None and not missing(r.stability)]
    if len(steady) >= 2:
        (calm, calm_label), (rough, rough_label) = min(steady), max(steady)
        sentences.append(
            f"Steadiest validation loss over the last half of training: {calm_label} (mean change "
            f"{calm:.4f} per epoch); least steady: {rough_label} ({rough:.4f})."
        )
    elif not steady:
        sentences.append("No run trained for two epochs or more, so curve stability cannot be measured.")
    return sentences


def sensitivity_findings(rows: list[RunAnalysis]) -> list[str]:
    """For two classes: who misses the fewest sick patients, and at what cost to specificity."""
    rated = [
        (r.test.sensitivity.estimate, r.test.specificity.estimate, r)
        for r in rows
        if r.test.sensitivity is not None
        and r.test.specificity is not None
        and not missing(r.test.sensitivity.estimate)
    ]
    if not rated:
        return []
    top = max(rated, key=lambda t: (t[0], t[1]))[2]
    return [
        f"Highest sensitivity at the validation-chosen threshold: {top.label}, {percent_ci(top.test.sensitivity)} "
        f"of {top.positive_class} cases found, at a specificity of {percent_ci(top.test.specificity)}."
    ]


def calibration_findings(rows: list[RunAnalysis], pair_of) -> list[str]:
    """The lowest and highest calibration error with their intervals; "best calibrated" only
    when the paired interval against the next lowest excludes zero. ``pair_of(a, b)`` gives the
    comparison of two run ids (or None)."""
    rows = [r for r in rows if not missing(r.test.ece.estimate)]
    if not rows:
        return []
    if len(rows) == 1:
        return [f"{rows[0].label}'s expected calibration error is {_ece(rows[0])}."]
    order = sorted(rows, key=lambda r: (r.test.ece.estimate, r.run))
    low, next_low, high = order[0], order[1], order[-1]
    text = f"Lowest expected calibration error: {low.label}, {_ece(low)}; highest: {high.label}, {_ece(high)}."
    pair = pair_of(low.run, next_low.run)
    difference = pair.at(TEST).ece_difference if pair is not None else None
    if difference is None or not difference.has_interval:
        return [text]
    if difference.excludes_zero:
        text += (
            f" {low.label} is the best calibrated: against the next lowest, {next_low.label}, the paired difference is "
            f"{signed_ci(difference)}."
        )
    else:
        text += (
            f" Against the next lowest, {next_low.label} ({next_low.test.ece.estimate:.3f}), the paired difference "
            f"is {signed_ci(difference)}: the two are not distinguishable, so none is called the best calibrated."
        )
    return [text]


def _ece(row: RunAnalysis) -> str:
    return number_ci(row.test.ece)


def settings_findings(group: str, runs: list[RunAnalysis], spreads: dict, sets: dict) -> list[str]:
    """How far test accuracy moves across the runs of one model and mode, and whether the
    permutation test finds more spread than the noise, on each set (``spreads`` by set)."""
    if len(runs) < 2 or TEST not in spreads:
        return []
    sentences = []
    for name, role in sets.items():
        spread = spreads.get(name)
        if spread is None:
            continue
        low, high = min(spread.accuracies), max(spread.accuracies)
        where = "test accuracy" if name == TEST else f"accuracy on {set_title(name, role)}"
        text = (
            f"Across {len(runs)} runs of {group}, {where} ranges from {percent(low)} to {percent(high)} "
            f"({100 * (high - low):.1f} points"
        )
        if spread.mean_half_width is not None:
            text += f"; one run's 95% interval is about ±{100 * spread.mean_half_width:.1f} points"
        text += f"): {spread_verdict(spread)}"
        if name != TEST:
            text += f"; the internal test's conclusion {_spread_holds(spreads[TEST], spread)}"
        sentences.append(text + ".")
    return sentences


def _spread_holds(internal, other) -> str:
    if internal.significant == other.significant:
        return "holds"
    return "does not hold"
