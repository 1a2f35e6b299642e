"""The tables of docs/recipe.md, from study directories of finished runs.

    python docs/recipe_evidence.py runs/recipe-candidates [runs/recipe ...] [--choose RUN_SUBSTRING]

For every run: the internal test split and the shifted sample (the external set named
``shifted``, a validation set: the recipe is chosen on it) with 95% intervals that resample
patients, at each source-only decision rule (the threshold each rule fits on the run's own
validation split: ``0.5``, ``val-youden``, ``val-balanced``). With ``--choose``, the paired
comparison of that run against every other on the shifted sample: the exact McNemar test
clustered by patient, Holm-adjusted over the family, and the paired patient bootstrap
interval of the accuracy difference.

Nothing here reads a test number to choose anything; the internal test columns are reported
beside the shifted ones so that a reader sees both.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from cxrlab.core.decision import choose_threshold, decide
from cxrlab.evaluate.stats import (
    bootstrap_accuracy,
    bootstrap_auc,
    bootstrap_proportion,
    clustered_mcnemar,
    holm,
    paired_bootstrap_difference,
)
from cxrlab.report.scored import ScoredSet, scored_set
from cxrlab.training.records import RunRecord, list_runs

RULES = ("0.5", "val-youden", "val-balanced")
SHIFTED = "shifted"


def rule_threshold(run: RunRecord, rule: str) -> float:
    """The threshold ``rule`` fits on the run's validation predictions (no test data);
    ``own``: the one the run chose by its own rule."""
    if rule == "own":
        assert run.threshold is not None
        return run.threshold
    _, labels, probs = run.prediction_arrays("val")
    return choose_threshold(rule, labels, probs, run.positive)


def scores(scored: ScoredSet, threshold: float) -> dict[str, str]:
    predicted = decide(scored.probs, threshold, scored.positive)
    positive = scored.labels == scored.positive
    called = predicted == scored.positive
    clusters = scored.clusters
    acc = bootstrap_accuracy(scored.labels, predicted, clusters)
    spec = bootstrap_proportion(~called, ~positive, clusters)
    sens = bootstrap_proportion(called, positive, clusters)
    return {
        "accuracy": f"{100 * acc.estimate:.1f}% ({100 * acc.low:.1f}-{100 * acc.high:.1f})",
        "sensitivity": f"{sens.estimate:.3f}",
        "specificity": f"{spec.estimate:.3f} ({spec.low:.2f}-{spec.high:.2f})",
    }


def auc(scored: ScoredSet) -> str:
    interval = bootstrap_auc(scored.labels, scored.probs, scored.positive, scored.clusters)
    return f"{interval.estimate:.3f} ({interval.low:.3f}-{interval.high:.3f})"


def run_rows(runs: list[RunRecord]) -> list[str]:
    lines = [
        "| run | rule | threshold | internal test accuracy | internal AUC | shifted accuracy | shifted sensitivity "
        "| shifted specificity | shifted AUC | fitting time (CPU) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        test, shifted = scored_set(run), scored_set(run, SHIFTED)
        metrics = run.scores
        cpu = f" ({metrics.train_cpu_seconds:.0f} s)" if metrics.train_cpu_seconds else ""
        for rule in RULES:
            threshold = rule_threshold(run, rule)
            inside, outside = scores(test, threshold), scores(shifted, threshold)
            lines.append(
                f"| {run.run_id} | {rule}{' (its own)' if rule == run.config.threshold else ''} | {threshold:.3f} "
                f"| {inside['accuracy']} | {auc(test)} | {outside['accuracy']} | {outside['sensitivity']} "
                f"| {outside['specificity']} | {auc(shifted)} | {metrics.train_seconds:.0f} s{cpu} |"
            )
    return lines


def paired_rows(chosen: RunRecord, others: list[RunRecord], rule: str) -> list[str]:
    a = scored_set(chosen, SHIFTED)
    predicted_a = decide(a.probs, rule_threshold(chosen, rule), a.positive)
    rows, p_values = [], []
    for other in others:
        b = scored_set(other, SHIFTED)
        assert b.paths == a.paths, "the runs were scored on the same shifted images, in the same order"
        predicted_b = decide(b.probs, rule_threshold(other, rule), b.positive)
        test = clustered_mcnemar(predicted_a == a.labels, predicted_b == b.labels, a.clusters)
        difference = paired_bootstrap_difference(a.labels, predicted_a, predicted_b, clusters=a.clusters)
        rows.append((other, test, difference))
        p_values.append(test.p_value)
    adjusted = holm(p_values) if p_values else []
    lines = [
        f"Paired on the shifted sample, each run at {'its own rule' if rule == 'own' else 'rule ' + rule}: "
        f"{chosen.run_id} against each other run "
        f"({len(rows)} comparisons, Holm-adjusted).",
        "",
        "| other run | chosen right, other wrong | other right, chosen wrong | p (clustered McNemar) | p adjusted "
        "| accuracy difference (95% CI) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for (other, test, difference), p_adjusted in zip(rows, adjusted):
        lines.append(
            f"| {other.run_id} | {test.a_only} | {test.b_only} | {test.p_value:.3g} | {p_adjusted:.3g} "
            f"| {100 * difference.estimate:+.1f} ({100 * difference.low:+.1f} to {100 * difference.high:+.1f}) points |"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("studies", nargs="+", help="study directories (their runs/ are read)")
    p.add_argument("--choose", help="a substring of the chosen run's name: compare it with the others")
    p.add_argument("--rule", default="own", choices=("own", *RULES), help="the decision rule of the paired comparison")
    args = p.parse_args(argv)
    runs = [run for study in args.studies for run in list_runs(f"{study}/runs")]
    runs = [run for run in runs if SHIFTED in run.scores.external]
    if not runs:
        sys.exit("no finished runs scored on an external set named 'shifted'")
    print("\n".join(run_rows(runs)))
    if args.choose:
        chosen = [run for run in runs if args.choose in run.run_id]
        if len(chosen) != 1:
            sys.exit(f"--choose {args.choose}: {len(chosen)} runs match, give a substring of one run's name")
        print()
        print("\n".join(paired_rows(chosen[0], [r for r in runs if r is not chosen[0]], args.rule)))
    print(f"\n{len(runs)} runs; intervals: 95% percentile bootstrap over patients ({np.__name__} seed 0).")


if __name__ == "__main__":
    main()
