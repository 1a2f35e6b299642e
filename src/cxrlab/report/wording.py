"""The words for a verdict, written once so that no sentence can contradict the numbers beside it.

A difference between two runs is claimed only when both procedures agree: the exact test,
clustered by patient and adjusted within its family (Holm), reaches 5%, and the patient
bootstrap's 95% interval of the difference excludes zero. When only one of the two says so,
the sentence says which, and claims nothing.
"""

from __future__ import annotations

from cxrlab.report.formatting import p_statement, points_ci
from cxrlab.report.pairs import ALPHA, PairResult, SpreadResult
from cxrlab.report.scored import IMAGE, TEST

LEVEL_WORDS = f"{ALPHA:.0%}"


def set_title(name: str, role: str = "test") -> str:
    """How an evaluation set is named: a set that chose anything is a validation set."""
    if name == TEST:
        return "the internal test split"
    return f"{name} (validation set)" if role == "validation" else f"{name} (external test set)"


def test_name(unit: str) -> str:
    if unit == IMAGE:
        return "McNemar's exact test"
    return "McNemar's exact test clustered by patient"


def unit_words(unit: str, n: int, n_patients: int) -> str:
    """``745 images of 405 patients`` or ``624 images, each its own unit``."""
    if unit == IMAGE:
        return f"{n} images, each its own unit, as the file names name no patient"
    return f"{n} images of {n_patients} patients"


def p_words(result: PairResult | SpreadResult, name: str | None = None) -> str:
    """``McNemar p = 0.012; Holm-adjusted over 6 tests, p = 0.072``."""
    text = f"{name or test_name(result.unit)}, {p_statement(result.p_value)}"
    if result.adjustment and result.adjustment.size > 1:
        text += f"; Holm-adjusted over {result.adjustment.size} tests, {p_statement(result.adjustment.p_adjusted)}"
    return text


def claimed(result: PairResult) -> bool:
    """A difference is claimed when the adjusted test reaches 5% and the interval excludes zero."""
    return result.significant and result.accuracy_difference.excludes_zero


def verdict(result: PairResult, name_a: str, name_b: str) -> str:
    """The difference A − B with its interval, then what may be said of it."""
    difference = points_ci(result.accuracy_difference)
    # "after adjustment" only where the adjustment is what decided
    adjusted = " after adjustment" if (result.p_value < ALPHA) != result.significant else ""
    if claimed(result):
        better = name_a if result.a_better else name_b
        return f"{difference}: {better} is better at {LEVEL_WORDS} ({p_words(result)})"
    if result.significant:
        return (
            f"{difference}: the test reaches {LEVEL_WORDS}{adjusted} ({p_words(result)}) but the 95% interval "
            f"includes zero, so no difference is claimed"
        )
    if result.accuracy_difference.excludes_zero:
        return (
            f"{difference}: the 95% interval excludes zero, but the test does not reach {LEVEL_WORDS}{adjusted} "
            f"({p_words(result)}), so no difference is claimed"
        )
    return f"{difference}: within the noise of {result.n} images, no difference claimed ({p_words(result)})"


def verdict_short(result: PairResult, name_a: str, name_b: str) -> str:
    """A table cell: who is better, or why nothing is claimed."""
    if claimed(result):
        return f"{name_a if result.a_better else name_b} better"
    if result.significant:
        return "not claimed: test significant, interval includes 0"
    if result.accuracy_difference.excludes_zero:
        return "not claimed: interval excludes 0, test not significant"
    return "no difference claimed"


def holds(internal: PairResult, other: PairResult) -> str:
    """Whether the internal test's conclusion about a pair holds on another set."""
    if claimed(internal) and claimed(other):
        return "holds" if internal.a_better == other.a_better else "reverses"
    if not claimed(internal) and not claimed(other):
        return "holds (no difference claimed on either)"
    if claimed(other):
        return "does not hold (a difference is claimed there, none on the internal test)"
    return "does not hold (no difference claimed there)"


def spread_verdict(result: SpreadResult) -> str:
    """Whether the runs of one group differ by more than the noise, from the permutation test."""
    name = "permutation test of equal accuracy" + (", by patient" if result.unit != IMAGE else "")
    if result.significant:
        return f"more spread than the noise of the test set ({p_words(result, name)})"
    return f"no more spread than the noise of the test set ({p_words(result, name)})"
