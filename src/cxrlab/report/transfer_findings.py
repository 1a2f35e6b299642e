"""Section F's findings: sentences built from the numbers of what transferred, never fixed text.

As in ``cxrlab.report.findings``: accuracies carry their 95% intervals; a difference between
two runs is claimed only where the paired test (clustered by patient, Holm-adjusted within its
family) and the interval of the difference agree (``wording.verdict``); times are the runs'
own measurements, one run each, and nothing is claimed of them beyond the numbers.
"""

from __future__ import annotations

import math

from cxrlab.core.text import missing, percent, seconds
from cxrlab.evaluate.similarity import Similarity
from cxrlab.report.analysis import RunAnalysis
from cxrlab.report.findings import elsewhere
from cxrlab.report.formatting import number_ci, percent_ci, points, ratio
from cxrlab.report.pairs import PairedComparison
from cxrlab.report.scored import TEST
from cxrlab.report.wording import claimed, set_title, verdict
from cxrlab.training.records import RunRecord

REFERENCE = "the pretrained fine-tune"


def in_cpu_time(rows: list[RunAnalysis]) -> bool:
    """Whether ``rows`` are compared in CPU seconds: some trained on a loaded machine, which
    inflates wall time far more than CPU time, and every one recorded its CPU seconds."""
    return any(r.loaded for r in rows) and all(r.train_cpu_seconds is not None for r in rows)


def cost(row: RunAnalysis, cpu: bool) -> float | None:
    return row.train_cpu_seconds if cpu else row.train_seconds


def cost_words(cpu: bool) -> str:
    return "CPU time" if cpu else "training time"


def spent(row: RunAnalysis) -> str:
    """``1.9 s`` of training, its CPU seconds beside it when recorded (as the tables show it)."""
    text = seconds(row.train_seconds)
    return text + (f" ({seconds(row.train_cpu_seconds)} CPU)" if row.train_cpu_seconds is not None else "")


def time_relation(row: RunAnalysis, reference: RunAnalysis, reference_name: str) -> str:
    """``3.2× less training time than the full fine-tune`` or ``1.4× the CPU time of ...``."""
    cpu = in_cpu_time([row, reference])
    time, base = cost(row, cpu), cost(reference, cpu)
    if time is None or base is None or missing(time) or missing(base) or not time or not base:
        return "training time not recorded for both"
    if max(time, base) / min(time, base) < 1.05:  # what ratio() would print as "1.0×"
        return f"about the {cost_words(cpu)} of {reference_name}"
    if time < base:
        return f"{ratio(base, time)} less {cost_words(cpu)} than {reference_name}"
    return f"{ratio(time, base)} the {cost_words(cpu)} of {reference_name}"


def freeze_findings(
    model: str,
    depths: list[tuple[int, RunAnalysis]],
    full: RunAnalysis | None,
    frozen: RunAnalysis | None,
    stages: int | None,
    deep: tuple[int, RunAnalysis, PairedComparison | None] | None,
) -> list[str]:
    """The range of test accuracy and cost over the freeze depths of ``model``, its two ends,
    and the deep freeze chosen on validation against the full fine-tune."""
    sentences = []
    if len(depths) == 1:
        k, row = depths[0]
        sentences.append(
            f"At the one freeze depth of {model}, K = {k}{f' of {stages} stages' if stages else ''}, test accuracy "
            f"was {percent_ci(row.test.accuracy)} in {spent(row)} of training."
        )
    elif depths:
        low = min(depths, key=lambda d: (d[1].test.accuracy.estimate, d[0]))
        high = max(depths, key=lambda d: (d[1].test.accuracy.estimate, -d[0]))
        cpu = in_cpu_time([row for _, row in depths])
        timed = [d for d in depths if cost(d[1], cpu) is not None]
        text = (
            f"Over {len(depths)} freeze depths of {model} (K = {', '.join(str(k) for k, _ in depths)}"
            f"{f' of {stages} stages' if stages else ''}), test accuracy ran from {percent_ci(low[1].test.accuracy)} "
            f"at K = {low[0]} to {percent_ci(high[1].test.accuracy)} at K = {high[0]}"
        )
        if timed:
            fast = min(timed, key=lambda d: cost(d[1], cpu) or 0.0)
            slow = max(timed, key=lambda d: cost(d[1], cpu) or 0.0)
            text += (
                f"; {cost_words(cpu)} from {seconds(cost(fast[1], cpu))} (K = {fast[0]}) to "
                f"{seconds(cost(slow[1], cpu))} (K = {slow[0]})"
            )
        sentences.append(text + ".")
    if full is not None:
        sentences.append(
            f"The full fine-tune (nothing frozen) reached {percent_ci(full.test.accuracy)} in {spent(full)}."
        )
    if frozen is not None:
        text = (
            f"The fixed feature extractor (frozen mode) reached {percent_ci(frozen.test.accuracy)} in {spent(frozen)}"
        )
        if full is not None:
            text += f", {time_relation(frozen, full, 'the full fine-tune')}"
        sentences.append(text + ".")
    if deep is not None and stages:
        k, row, pair = deep
        text = (
            f"Among the depths that freeze at least half of the {stages} stages (K ≥ {math.ceil(stages / 2)}), "
            f"validation loss chose K = {k} ({row.val_loss:.4f}): test accuracy {percent_ci(row.test.accuracy)} "
            f"in {spent(row)}"
        )
        if full is not None:
            text += f", {time_relation(row, full, 'the full fine-tune')}"
        if pair is not None:
            text += f"; against the full fine-tune, {verdict(pair.at(TEST), f'K = {k}', 'the full fine-tune')}"
        sentences.append(text + ".")
    return sentences


def init_findings(
    model: str,
    reference: RunAnalysis | None,
    compared: list[tuple[RunAnalysis, PairedComparison | None]],
    sets: dict[str, str],
) -> list[str]:
    """Each partial transfer, statistics init, random init and deep freeze of ``model`` against
    its pretrained fine-tune, on every set, then what the family of comparisons shows."""
    if reference is None:
        return [
            f"{model} has no pretrained fine-tune on the whole training split, so its other inits are shown "
            "without a paired comparison."
        ]
    sentences = [
        f"The pretrained fine-tune of {model} reached {percent_ci(reference.test.accuracy)} test accuracy, AUC "
        f"{number_ci(reference.test.roc_auc)}, in {spent(reference)}."
    ]
    for row, pair in compared:
        if pair is None:
            sentences.append(f"{row.label} was scored on other test images than {REFERENCE}: not paired.")
            continue
        text = (
            f"{row.label}: {percent_ci(row.test.accuracy)}; against {REFERENCE}, "
            f"{verdict(pair.at(TEST), row.label, REFERENCE)}; "
            f"{time_relation(row, reference, REFERENCE)}."
        )
        sentences.append(text + elsewhere(pair, sets, row.label, REFERENCE))
    return sentences


def family_tally(pairs: list[PairedComparison], name: str = TEST, role: str = "test") -> str:
    """How many comparisons the family holds on one set, and how many show a difference."""
    results = [p.at(name) for p in pairs if p.on(name) is not None]
    if not results:
        return f"No comparison with {REFERENCE} could be made on {set_title(name, role)}."
    differ = [r for r in results if claimed(r)]
    better = sum(1 for r in differ if r.a_better)
    size = results[0].adjustment.size if results[0].adjustment else len(results)
    text = (
        f"The family of comparisons with {REFERENCE} holds {size} test{'s' if size != 1 else ''} on "
        f"{set_title(name, role)}"
        + (", Holm-adjusted together" if size > 1 else "")
        + f": {len(differ)} {'differs' if len(differ) == 1 else 'differ'} from it"
    )
    if differ:
        text += f" ({better} better, {len(differ) - better} worse)"
    rest = len(results) - len(differ)
    text += f", and {rest} {'shows' if rest == 1 else 'show'} no difference" if rest else ""
    return text + " (a difference counts only where the adjusted test reaches 5% and the interval excludes zero)."


def convergence_findings(runs: list[RunRecord], labels: dict[str, str]) -> list[str]:
    """Which run's validation AUC (and loss) came near its best soonest and latest, in training
    seconds, with the best it came near (a run that never learns converges at once)."""
    sentences = []
    for field, what in (
        ("converged_auc", "validation AUC came within 0.005 of its best"),
        ("converged", "validation loss came within 5% of its lowest"),
    ):
        timed = [r for r in runs if getattr(r.scores, f"{field}_seconds") is not None]
        if len(timed) < 2:
            continue
        ordered = sorted(timed, key=lambda r: (getattr(r.scores, f"{field}_seconds"), r.run_id))
        first, last = ordered[0], ordered[-1]
        sentences.append(
            f"{what[0].upper()}{what[1:]} soonest for {labels[first.run_id]} ({_when(first, field)}) and latest "
            f"for {labels[last.run_id]} ({_when(last, field)})."
        )
    if sentences:
        sentences.append(
            "Times are one run each, wall-clock on the machine that trained them, from the validation split alone; "
            "no test is made of them."
        )
    return sentences


def _when(run: RunRecord, field: str) -> str:
    metrics = run.scores
    epoch, spent = getattr(metrics, f"{field}_epoch"), getattr(metrics, f"{field}_seconds")
    if field == "converged_auc":
        best = max((r.val_auc for r in run.epochs if r.val_auc is not None and math.isfinite(r.val_auc)), default=None)
        reached = f", best validation AUC {best:.3f}" if best is not None else ""
    else:
        reached = f", lowest validation loss {min(r.val_loss for r in run.epochs):.4f}" if run.epochs else ""
    return f"epoch {epoch} of {metrics.epochs_run}, after {seconds(spent)}{reached}"


def size_findings(lines: dict[str, list[RunAnalysis]]) -> list[str]:
    """Each data-size curve from its fewest to its most training images, and which line is
    highest at the smallest size they share, without a claim (no paired test across sizes)."""
    sentences = []
    for label, rows in lines.items():
        if len(rows) < 2:
            only = rows[0]
            sentences.append(
                f"{label}: one size only, {only.n_train} training images, {percent_ci(only.test.accuracy)}."
            )
            continue
        small, large = rows[0], rows[-1]
        change = large.test.accuracy.estimate - small.test.accuracy.estimate
        sentences.append(
            f"{label}: with {small.n_train} training images, test accuracy {percent_ci(small.test.accuracy)} and AUC "
            f"{number_ci(small.test.roc_auc)}; with {large.n_train}, {percent_ci(large.test.accuracy)} and "
            f"{number_ci(large.test.roc_auc)} ({points(change)})."
        )
    shared = set.intersection(*({r.n_train for r in rows} for rows in lines.values())) if len(lines) > 1 else set()
    if shared:
        size = min(shared)
        at = {label: next(r for r in rows if r.n_train == size) for label, rows in lines.items()}
        top = max(at, key=lambda label: (at[label].test.accuracy.estimate, label))
        sentences.append(
            f"At {size} training images the highest test accuracy, {percent(at[top].test.accuracy.estimate)}, is "
            f"that of {top}; the lines are read from their intervals here, not tested against each other."
        )
    return sentences


def similarity_findings(results: list[Similarity]) -> list[str]:
    """Where each compared network's representation stays close to the reference's and where
    it moves furthest, in linear CKA."""
    sentences = []
    for result in results:
        values = [(v, layer) for v, layer in zip(result.cka, result.layers) if math.isfinite(v)]
        if not values:
            continue
        lowest = min(values)
        kept = [layer for v, layer in values if v >= 0.9]
        text = (
            f"{result.other} against {result.reference} ({result.probes} {result.split} images): CKA "
            f"{result.cka[0]:.3f} at {result.layers[0]} and {result.cka[-1]:.3f} at {result.layers[-1]}"
        )
        if lowest[1] != result.layers[-1]:
            text += f"; the lowest, {lowest[0]:.3f}, at {lowest[1]}"
        text += f"; at or above 0.9 at {', '.join(kept)}" if kept else "; nowhere at or above 0.9"
        sentences.append(text + ".")
    return sentences
