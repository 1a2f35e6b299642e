"""Statistics of test results: confidence intervals and paired tests, as plain functions.

A test set of a few hundred images leaves every metric with an error bar of a few points;
these functions say how big it is and whether two runs scored on the same images differ.

- Percentile bootstrap intervals, seeded, vectorised over resamples: accuracy (any mean of
  per-image values) and ROC AUC (binary, or macro one-vs-rest).
- Wilson score intervals for proportions (sensitivity, specificity).
- McNemar's exact test on paired predictions, with a plain-words verdict.
- A paired bootstrap of the difference in accuracy or AUC between two runs.

Inputs follow ``cxrlab.core.metrics``: ``y_true`` class indices, ``probs`` ``(N, C)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist
from typing import NamedTuple

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
# Resamples are drawn in blocks so that memory stays bounded on large test sets.
_BLOCK = 250


class Interval(NamedTuple):
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def bootstrap_indices(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` indices of resamples with replacement, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n), dtype=np.int64) if n else np.zeros((n_boot, 0), dtype=np.int64)


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


def bootstrap_mean(values, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """Bootstrap interval of the mean of per-image ``values`` (1/0 correctness gives accuracy)."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    replicates = np.concatenate([values[block].mean(axis=1) for block in _blocks(len(values), n_boot, seed)])
    return percentile_interval(float(values.mean()), replicates, level)


def bootstrap_accuracy(y_true, y_pred, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Interval:
    """Accuracy of ``y_pred`` with its percentile bootstrap interval."""
    correct = np.asarray(y_true) == np.asarray(y_pred)
    return bootstrap_mean(correct, n_boot, level, seed)


def bootstrap_auc(
    y_true, probs, positive: int = 1, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> Interval:
    """ROC AUC with its percentile bootstrap interval: of ``probs[:, positive]`` for two
    classes, the macro one-vs-rest AUC for more."""
    y_true, probs = np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    if len(y_true) == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    everything = np.arange(len(y_true))[None, :]
    estimate = float(_auc_of_resamples(y_true, probs, everything, positive)[0])
    replicates = np.concatenate(
        [_auc_of_resamples(y_true, probs, block, positive) for block in _blocks(len(y_true), n_boot, seed)]
    )
    return percentile_interval(estimate, replicates, level)


def bootstrap_metric(
    metric: Callable[..., float], y_true, scores, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> Interval:
    """Bootstrap interval of any ``metric(y_true, scores)``: one call per resample, so use
    :func:`bootstrap_accuracy` or :func:`bootstrap_auc` where they apply (far faster)."""
    y_true, scores = np.asarray(y_true), np.asarray(scores)
    estimate = float(metric(y_true, scores))
    replicates = [
        float(metric(y_true[rows], scores[rows])) for block in _blocks(len(y_true), n_boot, seed) for rows in block
    ]
    return percentile_interval(estimate, np.array(replicates), level)


def wilson_interval(successes: int, n: int, level: float = LEVEL) -> Interval:
    """A proportion with its Wilson score interval (sound at 0 and 1 and for small n, where
    the normal approximation is not)."""
    if n <= 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half))


def sensitivity_specificity(y_true, y_pred, positive: int = 1, level: float = LEVEL) -> dict[str, Interval]:
    """Sensitivity (recall of ``positive``) and specificity (recall of the rest), with Wilson
    intervals."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    sick, healthy = y_true == positive, y_true != positive
    return {
        "sensitivity": wilson_interval(int((y_pred[sick] == positive).sum()), int(sick.sum()), level),
        "specificity": wilson_interval(int((y_pred[healthy] != positive).sum()), int(healthy.sum()), level),
    }


def mcnemar_exact(correct_a, correct_b) -> dict:
    """McNemar's exact test on paired correctness of two classifiers on the same images.

    Only the discordant pairs count: ``a_only`` images A got right and B wrong, ``b_only``
    the reverse. Under the null both are equally likely, so the two-sided p-value is the
    exact binomial test of ``a_only`` out of ``a_only + b_only`` at 1/2.
    """
    correct_a, correct_b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if correct_a.shape != correct_b.shape:
        raise ValueError("paired predictions must have the same length")
    a_only = int((correct_a & ~correct_b).sum())
    b_only = int((~correct_a & correct_b).sum())
    return {
        "a_only": a_only,
        "b_only": b_only,
        "n": len(correct_a),
        "p_value": binomial_two_sided(min(a_only, b_only), a_only + b_only),
    }


def binomial_two_sided(k: int, n: int) -> float:
    """Exact two-sided p-value of ``k`` successes in ``n`` fair trials, ``k <= n / 2``
    (twice the lower tail, capped at 1; exact integer arithmetic, no overflow)."""
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def mcnemar_verdict(test: dict, name_a: str = "A", name_b: str = "B", alpha: float = 0.05) -> str:
    """Plain words for a :func:`mcnemar_exact` result."""
    level = f"{alpha:.0%}"
    if test["p_value"] >= alpha:
        return f"no significant difference at {level}"
    better = name_a if test["a_only"] > test["b_only"] else name_b
    return f"{better} is better at {level}"


def paired_bootstrap_difference(
    y_true,
    pred_a,
    pred_b,
    metric: str = "accuracy",
    probs_a=None,
    probs_b=None,
    positive: int = 1,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
    seed: int = 0,
) -> Interval:
    """Interval of ``metric(A) - metric(B)`` over the same resamples of the same images.

    ``metric`` is ``"accuracy"`` (from the predicted labels) or ``"auc"`` (from the
    probabilities). Resampling images, not runs, keeps the pairing: an interval that
    excludes 0 says the difference is larger than the test set's noise.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    if metric == "accuracy":
        difference = (np.asarray(pred_a) == y_true).astype(np.float64) - (np.asarray(pred_b) == y_true)
        return bootstrap_mean(difference, n_boot, level, seed)
    if metric != "auc":
        raise ValueError(f"unknown metric {metric!r}: accuracy or auc")
    probs_a, probs_b = np.asarray(probs_a, dtype=np.float64), np.asarray(probs_b, dtype=np.float64)
    everything = np.arange(len(y_true))[None, :]
    estimate = float(
        _auc_of_resamples(y_true, probs_a, everything, positive)[0]
        - _auc_of_resamples(y_true, probs_b, everything, positive)[0]
    )
    replicates = np.concatenate(
        [
            _auc_of_resamples(y_true, probs_a, block, positive) - _auc_of_resamples(y_true, probs_b, block, positive)
            for block in _blocks(len(y_true), n_boot, seed)
        ]
    )
    return percentile_interval(estimate, replicates, level)


def _blocks(n: int, n_boot: int, seed: int):
    """The ``n_boot`` resamples of :func:`bootstrap_indices`, in blocks of rows."""
    indices = bootstrap_indices(n, n_boot, seed)
    for start in range(0, n_boot, _BLOCK):
        yield indices[start : start + _BLOCK]


def _auc_of_resamples(y_true: np.ndarray, probs: np.ndarray, resamples: np.ndarray, positive: int) -> np.ndarray:
    """AUC of each resample (rows of ``resamples``): binary, or the macro one-vs-rest mean."""
    if probs.shape[1] == 2:
        return _binary_auc_of_resamples(y_true == positive, probs[:, positive], resamples)
    per_class = np.stack(
        [_binary_auc_of_resamples(y_true == c, probs[:, c], resamples) for c in range(probs.shape[1])], axis=1
    )
    with np.errstate(invalid="ignore"):
        # A class absent from the whole test set is left out, as in metrics.roc_auc_ovr.
        present = np.isin(np.arange(probs.shape[1]), y_true)
        return np.nanmean(np.where(present, per_class, np.nan), axis=1) if present.any() else per_class[:, 0]


def _binary_auc_of_resamples(is_positive: np.ndarray, scores: np.ndarray, resamples: np.ndarray) -> np.ndarray:
    """The Mann-Whitney AUC (ties count half) of every resample at once.

    A resample is a multiset of images, so it is counted as weights on the distinct score
    values: for each value, how many positives and negatives of the resample have it. The
    AUC is then the sum over values of positives x (negatives below + half the negatives
    level), over positives x negatives; NaN when a resample lacks one of the two.
    """
    values, group = np.unique(scores, return_inverse=True)
    n_groups, n_rows = len(values), resamples.shape[0]
    slots = (np.arange(n_rows)[:, None] * n_groups + group[resamples]).ravel()
    positives = np.bincount(
        slots, weights=is_positive[resamples].ravel().astype(np.float64), minlength=n_rows * n_groups
    ).reshape(n_rows, n_groups)
    negatives = np.bincount(slots, minlength=n_rows * n_groups).reshape(n_rows, n_groups) - positives
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    wins = (positives * (below + 0.5 * negatives)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)
