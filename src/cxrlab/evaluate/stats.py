"""Statistics of test results: confidence intervals and paired tests, as plain functions.

A test set of a few hundred images leaves every metric with an error bar of a few points;
these functions say how big it is and whether two runs scored on the same images differ.
Images of one patient are not independent (one patient can give a test split 30 images), so
every function takes ``clusters``, the patient of each image, and resamples or permutes
patients, never single images; ``clusters=None`` treats each image as its own patient.

- Percentile bootstrap intervals, seeded, vectorised over resamples: any mean of per-image
  values (accuracy), ratios (sensitivity, specificity, recall of a class), ROC AUC (binary,
  or macro one-vs-rest) and the expected calibration error. A resample draws patients with
  replacement and takes all their images, as weights on the images.
- Wilson score intervals for proportions of independent images (``scipy.stats.binomtest``).
- McNemar's exact test on paired predictions (``binomtest``), and its clustered form: the
  exact sign-flip test of the patients' discordant counts (Durkalski's statistic, its exact
  permutation distribution), which is McNemar's exact test when each patient has one image.
- A paired bootstrap of the difference in accuracy or AUC between two runs, by patient.
- A permutation test of whether several runs on the same images differ at all, and Holm's
  adjustment of a family of p-values.

Inputs follow ``cxrlab.core.metrics``: ``y_true`` class indices, ``probs`` ``(N, C)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from scipy import signal
from scipy.stats import binom, binomtest

from cxrlab.evaluate.resampling import (
    BLOCK,
    N_BOOT,
    bootstrap_indices,
    calibration_gaps,
    cluster_index,
    resample_weights,
    weighted_auc,
)

LEVEL = 0.95


class Interval(NamedTuple):
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


class PairedTest(NamedTuple):
    """A paired test of two runs' correctness on the same images."""

    a_only: int  # images A got right and B wrong
    b_only: int  # the reverse
    n: int  # images
    n_clusters: int  # patients (== n when each image is its own patient)
    p_value: float  # exact, two-sided


_NAN = Interval(float("nan"), float("nan"), float("nan"))


# --- resampling ----------------------------------------------------------------------------


def percentile_interval(estimate: float, replicates: np.ndarray, level: float = LEVEL) -> Interval:
    """The percentile interval of bootstrap ``replicates`` (resamples where the statistic is
    undefined, NaN, are left out)."""
    replicates = np.asarray(replicates, dtype=np.float64)
    replicates = replicates[~np.isnan(replicates)]
    if len(replicates) == 0 or math.isnan(estimate):
        return Interval(float(estimate), float("nan"), float("nan"))
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high))


def _bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray], n: int, clusters, n_boot: int, level: float, seed: int
) -> Interval:
    """Percentile interval of ``statistic(weights)`` (one value per row of image weights)."""
    if n == 0:
        return _NAN
    estimate = float(statistic(np.ones((1, n)))[0])
    replicates = np.concatenate([statistic(w) for w in resample_weights(clusters, n, n_boot, seed)])
    return percentile_interval(estimate, replicates, level)


# --- intervals of one run ----------------------------------------------------------------------


def bootstrap_mean(values, clusters=None, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """Bootstrap interval of the mean of per-image ``values`` (1/0 correctness gives accuracy)."""
    values = np.asarray(values, dtype=np.float64)
    return _bootstrap(lambda w: w @ values / w.sum(axis=1), len(values), clusters, n_boot, level, seed)


def bootstrap_accuracy(
    y_true, y_pred, clusters=None, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> Interval:
    """Accuracy of ``y_pred`` with its percentile bootstrap interval."""
    correct = np.asarray(y_true) == np.asarray(y_pred)
    return bootstrap_mean(correct, clusters, n_boot, level, seed)


def bootstrap_proportion(
    successes, trials, clusters=None, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> Interval:
    """Share of the ``trials`` images (a mask) that are ``successes`` (a mask), e.g. the
    sensitivity: of the diseased images, those called diseased."""
    hits = (np.asarray(successes, dtype=bool) & np.asarray(trials, dtype=bool)).astype(np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    if not trials.any():
        return _NAN

    def share(w: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (w @ hits) / (w @ trials)

    return _bootstrap(share, len(trials), clusters, n_boot, level, seed)


def bootstrap_auc(
    y_true, probs, positive: int = 1, clusters=None, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> Interval:
    """ROC AUC with its percentile bootstrap interval: of ``probs[:, positive]`` for two
    classes, the macro one-vs-rest AUC for more."""
    y_true, probs = np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    return _bootstrap(lambda w: weighted_auc(y_true, probs, w, positive), len(y_true), clusters, n_boot, level, seed)


def bootstrap_ece(y_true, probs, clusters=None, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """The expected calibration error (top-label, 15 bins) with its bootstrap interval."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=np.float64)
    gaps = calibration_gaps(y_true, probs)
    return _bootstrap(
        lambda w: np.abs(w @ gaps).sum(axis=1) / w.sum(axis=1), len(y_true), clusters, n_boot, level, seed
    )


def bootstrap_metric(
    metric: Callable[..., float],
    y_true,
    scores,
    clusters=None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval of any ``metric(y_true, scores)``: one call per resample, so use the
    vectorised functions above where they apply (far faster)."""
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    everything = np.arange(len(y_true))
    replicates = [
        float(metric(y_true[rows], scores[rows]))
        for block in resample_weights(clusters, len(y_true), n_boot, seed)
        for rows in (np.repeat(everything, w.astype(np.int64)) for w in block)
    ]
    return percentile_interval(float(metric(y_true, scores)), np.array(replicates), level)


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> Interval:
    """A proportion of independent trials with its Wilson score interval (sound at 0 and 1
    and for small n, where the normal approximation is not)."""
    if n <= 0:
        return _NAN
    interval = binomtest(successes, n).proportion_ci(confidence_level=level, method="wilson")
    return Interval(successes / n, float(interval.low), float(interval.high))


def sensitivity_specificity(
    y_true, y_pred, positive: int = 1, clusters=None, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> dict[str, Interval]:
    """Sensitivity (recall of ``positive``) and specificity (recall of the rest) with 95%
    intervals: Wilson for independent images, the patient bootstrap with ``clusters``."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    sick, called = y_true == positive, y_pred == positive
    if clusters is None:
        return {
            "sensitivity": wilson_interval(int((called & sick).sum()), int(sick.sum()), level),
            "specificity": wilson_interval(int((~called & ~sick).sum()), int((~sick).sum()), level),
        }
    return {
        "sensitivity": bootstrap_proportion(called, sick, clusters, n_boot, level, seed),
        "specificity": bootstrap_proportion(~called, ~sick, clusters, n_boot, level, seed),
    }


# --- two runs on the same images --------------------------------------------------------------


def mcnemar_exact(correct_a, correct_b) -> PairedTest:
    """McNemar's exact test on paired correctness of two classifiers on the same images.

    Only the discordant pairs count: ``a_only`` images A got right and B wrong, ``b_only``
    the reverse. Under the null both are equally likely, so the two-sided p-value is the
    exact binomial test of ``a_only`` out of ``a_only + b_only`` at 1/2.
    """
    return clustered_mcnemar(correct_a, correct_b, None)


def clustered_mcnemar(correct_a, correct_b, clusters=None) -> PairedTest:
    """McNemar's test with the patient as the unit: exact and two-sided.

    Each patient k contributes ``d_k``, the images A got right and B wrong minus the reverse.
    Under the null the two runs are exchangeable within a patient, so each ``d_k`` is as likely
    positive as negative; the p-value is the share of the 2^K sign flips whose |sum| reaches
    the observed one, computed exactly (Durkalski's clustered McNemar statistic, its exact
    permutation distribution). With one discordant image per patient it is McNemar's exact
    binomial test.
    """
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError("paired predictions must have the same length")
    clusters = cluster_index(None, len(correct_a)) if clusters is None else np.asarray(clusters, dtype=np.int64)
    a_only, b_only = correct_a & ~correct_b, ~correct_a & correct_b
    k = int(clusters.max()) + 1 if len(clusters) else 0
    per_patient = np.bincount(clusters, weights=a_only, minlength=k) - np.bincount(
        clusters, weights=b_only, minlength=k
    )
    return PairedTest(int(a_only.sum()), int(b_only.sum()), len(correct_a), k, sign_flip_p_value(per_patient))


def sign_flip_p_value(differences) -> float:
    """Exact two-sided p-value of ``sum(differences)`` when each integer difference is as likely
    positive as negative: P(|sum of ±|d_k|| >= |observed|)."""
    d = np.abs(np.rint(np.asarray(differences, dtype=np.float64))).astype(np.int64)
    observed = abs(int(np.rint(np.sum(differences))))
    d = d[d > 0]
    if observed == 0:
        return 1.0
    if d.max() == 1:  # every patient +-1: the binomial test McNemar's exact test is
        positives = int((np.rint(np.asarray(differences)) > 0).sum())
        return float(binomtest(positives, len(d), 0.5).pvalue)
    total = int(d.sum())
    pmf = np.zeros(2 * total + 1)
    pmf[total] = 1.0  # pmf[t + total] = P(sum = t)
    for value, count in zip(*np.unique(d, return_counts=True)):
        value, count = int(value), int(count)
        step = np.zeros(2 * value * count + 1)  # count patients of +-value: value * (2B - count)
        step[:: 2 * value] = binom.pmf(np.arange(count + 1), count, 0.5)
        wide = signal.convolve(pmf, step, method="auto")
        pmf = np.clip(wide[value * count : value * count + 2 * total + 1], 0.0, None)
    sums = np.arange(-total, total + 1)
    return float(min(1.0, pmf[np.abs(sums) >= observed].sum()))


def paired_bootstrap_difference(
    y_true,
    pred_a,
    pred_b,
    metric: str = "accuracy",
    probs_a=None,
    probs_b=None,
    positive: int = 1,
    clusters=None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Interval of ``metric(A) - metric(B)`` over the same resamples of the same patients.

    ``metric`` is ``"accuracy"`` (from the predicted labels), ``"auc"`` (from the
    probabilities) or ``"ece"`` (the calibration error). Resampling patients, not runs, keeps
    the pairing: an interval that excludes 0 says the difference is larger than the test
    set's noise.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    if metric == "accuracy":
        difference = (np.asarray(pred_a) == y_true).astype(np.float64) - (np.asarray(pred_b) == y_true)
        return bootstrap_mean(difference, clusters, n_boot, level, seed)
    if metric not in ("auc", "ece"):
        raise ValueError(f"unknown metric {metric!r}: accuracy, auc or ece")
    probs_a, probs_b = np.asarray(probs_a, dtype=np.float64), np.asarray(probs_b, dtype=np.float64)
    if metric == "auc":

        def statistic(w: np.ndarray) -> np.ndarray:
            return weighted_auc(y_true, probs_a, w, positive) - weighted_auc(y_true, probs_b, w, positive)

    else:
        gaps_a, gaps_b = calibration_gaps(y_true, probs_a), calibration_gaps(y_true, probs_b)

        def statistic(w: np.ndarray) -> np.ndarray:
            return (np.abs(w @ gaps_a).sum(axis=1) - np.abs(w @ gaps_b).sum(axis=1)) / w.sum(axis=1)

    return _bootstrap(statistic, len(y_true), clusters, n_boot, level, seed)


# --- several runs, several tests ---------------------------------------------------------------


def spread_test(correct, clusters=None, n_perm: int = N_BOOT, seed: int = 0) -> float:
    """p-value of the null that several runs scored on the same images are equally accurate.

    ``correct`` is ``(N, K)``: image by run. Under the null the runs are exchangeable within a
    patient, so their columns are permuted jointly over each patient's images; the statistic
    is the spread of the runs' correct counts (their sum of squares, the sum being fixed).
    Two runs get the exact test (:func:`clustered_mcnemar`), more a Monte Carlo p-value from
    ``n_perm`` permutations, ``(1 + as extreme) / (1 + n_perm)``.
    """
    correct = np.asarray(correct, dtype=np.float64)
    n, k = correct.shape
    if k < 2 or n == 0:
        return 1.0
    if k == 2:
        return clustered_mcnemar(correct[:, 0] > 0, correct[:, 1] > 0, clusters).p_value
    clusters = cluster_index(None, n) if clusters is None else np.asarray(clusters, dtype=np.int64)
    totals = np.stack([np.bincount(clusters, weights=correct[:, j]) for j in range(k)], axis=1)
    totals = totals[totals.max(axis=1) > totals.min(axis=1)]  # patients where the runs agree add nothing
    observed = float((totals.sum(axis=0) ** 2).sum())
    rng = np.random.default_rng(seed)
    as_extreme = 0
    for start in range(0, n_perm, BLOCK):
        rows = min(BLOCK, n_perm - start)
        order = np.argsort(rng.random((rows, len(totals), k)), axis=2)
        permuted = np.take_along_axis(np.broadcast_to(totals, order.shape), order, axis=2).sum(axis=1)
        as_extreme += int(((permuted**2).sum(axis=1) >= observed - 1e-9).sum())
    return (1 + as_extreme) / (1 + n_perm)


def holm(p_values) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (controls the chance of any false
    claim in the family at the level the adjusted values are compared with)."""
    p = np.asarray(p_values, dtype=np.float64)
    m = len(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adjusted
    return out


__all__ = [
    "LEVEL",
    "N_BOOT",
    "Interval",
    "PairedTest",
    "bootstrap_accuracy",
    "bootstrap_auc",
    "bootstrap_ece",
    "bootstrap_indices",
    "bootstrap_mean",
    "bootstrap_metric",
    "bootstrap_proportion",
    "cluster_index",
    "clustered_mcnemar",
    "holm",
    "mcnemar_exact",
    "paired_bootstrap_difference",
    "percentile_interval",
    "resample_weights",
    "sensitivity_specificity",
    "sign_flip_p_value",
    "spread_test",
    "wilson_interval",
]
