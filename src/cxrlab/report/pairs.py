"""Paired tests of runs scored on the same images, and families of them adjusted together.

Two runs on one evaluation set: the exact McNemar test clustered by patient (the patients'
discordant counts, signs flipped; McNemar's exact test when each patient has one image) for
the verdict, and the patient bootstrap of the accuracy, AUC and calibration-error
differences for the size. Several runs (the settings of one model and mode): the
permutation test of whether they differ at all. A report asks many such questions, so the
tests of one kind on one set form a family whose p-values are adjusted together (Holm), and
every verdict and tally reads the adjusted value.
"""

from __future__ import annotations

import numpy as np

from cxrlab.evaluate import stats
from cxrlab.report.analysis import Estimate, Typed
from cxrlab.report.scored import ScoredSet, aligned

ALPHA = 0.05


class Adjustment(Typed):
    """Where a test's p-value was adjusted: its family, how many tests it holds, the value."""

    family: str
    size: int
    p_adjusted: float


class PairResult(Typed):
    """Runs A and B on one evaluation set, image by image."""

    set: str
    unit: str  # "patient" or "image": what the test permutes and the bootstrap resamples
    n: int
    n_patients: int
    a_only: int  # images A got right and B wrong
    b_only: int
    p_value: float  # the clustered exact McNemar test, unadjusted
    adjustment: Adjustment | None = None
    accuracy_difference: Estimate  # A - B
    auc_difference: Estimate | None
    ece_difference: Estimate | None

    @property
    def p_final(self) -> float:
        """The p-value a verdict reads: adjusted within its family where it has one."""
        return self.adjustment.p_adjusted if self.adjustment else self.p_value

    @property
    def significant(self) -> bool:
        return self.p_final < ALPHA

    @property
    def a_better(self) -> bool:
        return self.accuracy_difference.estimate > 0

    def flipped(self) -> PairResult:
        return self.model_copy(
            update=dict(
                a_only=self.b_only,
                b_only=self.a_only,
                accuracy_difference=self.accuracy_difference.negated(),
                auc_difference=self.auc_difference.negated() if self.auc_difference else None,
                ece_difference=self.ece_difference.negated() if self.ece_difference else None,
            )
        )


class PairedComparison(Typed):
    """Runs A and B on every evaluation set both were scored on."""

    a: str
    b: str
    name_a: str
    name_b: str
    results: dict[str, PairResult]  # by evaluation set, the internal test first

    def on(self, name: str) -> PairResult | None:
        return self.results.get(name)

    def at(self, name: str) -> PairResult:
        """The result on set ``name``, which the pair has (the internal test always)."""
        return self.results[name]

    def oriented(self, first: str) -> PairedComparison:
        """This pair read with run ``first`` as A."""
        if self.a == first:
            return self
        return PairedComparison(
            a=self.b,
            b=self.a,
            name_a=self.name_b,
            name_b=self.name_a,
            results={name: r.flipped() for name, r in self.results.items()},
        )


class SpreadResult(Typed):
    """Several runs of one model and mode on one evaluation set: do they differ at all?"""

    group: str
    set: str
    unit: str
    runs: list[str]
    accuracies: list[float]
    mean_half_width: float | None  # of one run's 95% interval, in accuracy
    p_value: float
    adjustment: Adjustment | None = None

    @property
    def p_final(self) -> float:
        return self.adjustment.p_adjusted if self.adjustment else self.p_value

    @property
    def significant(self) -> bool:
        return self.p_final < ALPHA


def pair_result(a: ScoredSet, b: ScoredSet, id_a: str, id_b: str, n_boot: int, seed: int) -> PairResult:
    """Runs A and B on one set: the clustered exact test and the patient bootstrap of the
    differences (the same resamples for both runs)."""
    order = aligned(a, b, id_a, id_b)
    clusters = None if a.unit == "image" else a.clusters
    test = stats.clustered_mcnemar(a.correct, b.correct[order], clusters)
    pred_b, probs_b = b.predicted[order], b.probs[order]

    def difference(metric: str) -> Estimate:
        interval = stats.paired_bootstrap_difference(
            a.labels, a.predicted, pred_b, metric, a.probs, probs_b, a.positive, clusters, n_boot, seed=seed
        )
        return Estimate.of(interval)

    same_classes = a.classes == b.classes
    return PairResult(
        set=a.name,
        unit=a.unit,
        n=test.n,
        n_patients=test.n_clusters,
        a_only=test.a_only,
        b_only=test.b_only,
        p_value=test.p_value,
        accuracy_difference=difference("accuracy"),
        auc_difference=difference("auc") if same_classes else None,
        ece_difference=difference("ece") if same_classes else None,
    )


def spread_result(group: str, scored: dict[str, ScoredSet], half_widths: list[float], seed: int = 0) -> SpreadResult:
    """The permutation test of the runs ``scored`` (run id -> its predictions on one set)."""
    ids = list(scored)
    first = scored[ids[0]]
    columns = [first.correct] + [scored[i].correct[aligned(first, scored[i], ids[0], i)] for i in ids[1:]]
    clusters = None if first.unit == "image" else first.clusters
    return SpreadResult(
        group=group,
        set=first.name,
        unit=first.unit,
        runs=ids,
        accuracies=[float(c.mean()) for c in columns],
        mean_half_width=float(np.mean(half_widths)) if half_widths else None,
        p_value=stats.spread_test(np.stack(columns, axis=1), clusters, seed=seed),
    )


def adjusted(tests: list, family: str) -> list:
    """``tests`` (pair or spread results of one family) with Holm-adjusted p-values."""
    values = stats.holm([t.p_value for t in tests])
    return [
        t.model_copy(update=dict(adjustment=Adjustment(family=family, size=len(tests), p_adjusted=float(p))))
        for t, p in zip(tests, values)
    ]


def paired_comparison(
    ids: tuple[str, str],
    names: tuple[str, str],
    scored_a: dict[str, ScoredSet],
    scored_b: dict[str, ScoredSet],
    n_boot: int = stats.N_BOOT,
    seed: int = 0,
) -> PairedComparison:
    """Runs A and B (ids and display names) on every evaluation set both were scored on.
    Raises CxrlabError when their internal test images differ; an external set of the same
    name but other images is left out."""
    from cxrlab.core.errors import CxrlabError

    results = {}
    for name, a in scored_a.items():
        if name not in scored_b:
            continue
        try:
            results[name] = pair_result(a, scored_b[name], ids[0], ids[1], n_boot, seed)
        except CxrlabError:
            if not results:  # the internal test comes first: without it there is no pair
                raise
    return PairedComparison(a=ids[0], b=ids[1], name_a=names[0], name_b=names[1], results=results)


def adjusted_pairs(pairs: list[PairedComparison], family: str, set_name: str) -> list[PairedComparison]:
    """``pairs`` with their results on ``set_name`` Holm-adjusted as one family."""
    tested = [p for p in pairs if set_name in p.results]
    done = dict(zip((id(p) for p in tested), adjusted([p.results[set_name] for p in tested], family)))
    return [
        p.model_copy(update=dict(results={**p.results, set_name: done[id(p)]})) if id(p) in done else p for p in pairs
    ]
