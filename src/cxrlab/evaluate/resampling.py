"""Drawing bootstrap resamples by patient, and statistics evaluated on every resample at once.

A resample is a multiset of images: patients drawn with replacement, all of each patient's
images taken. It is held as weights on the images (how often each was drawn), so that a
statistic of many resamples is a matrix product, not a loop; with one image per patient it
is the plain bootstrap of images.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Sequence

import numpy as np

from cxrlab.core.metrics import ECE_BINS

N_BOOT = 2000
# Resamples are drawn in blocks so that memory stays bounded on large test sets.
BLOCK = 250


def cluster_index(groups: Sequence[Hashable] | None, n: int) -> np.ndarray:
    """Cluster numbers 0..k-1 in order of first appearance; each image its own without groups."""
    if groups is None:
        return np.arange(n, dtype=np.int64)
    numbers: dict[Hashable, int] = {}
    return np.array([numbers.setdefault(g, len(numbers)) for g in groups], dtype=np.int64)


def bootstrap_indices(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """``(n_boot, n)`` indices of resamples with replacement, the same for the same seed."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_boot, n), dtype=np.int64) if n else np.zeros((n_boot, 0), dtype=np.int64)


def resample_weights(clusters: np.ndarray | None, n: int, n_boot: int = N_BOOT, seed: int = 0) -> Iterator[np.ndarray]:
    """Blocks of ``(rows, n)`` weights, how often each image is drawn in each resample: the
    resample draws clusters with replacement (:func:`bootstrap_indices`) and takes all the
    images of each. With one image per cluster this is the plain bootstrap of images."""
    clusters = np.arange(n) if clusters is None else np.asarray(clusters, dtype=np.int64)
    k = int(clusters.max()) + 1 if n else 0
    drawn = bootstrap_indices(k, n_boot, seed)
    for start in range(0, n_boot, BLOCK):
        block = drawn[start : start + BLOCK]
        rows = np.arange(len(block))[:, None]
        counts = np.bincount((rows * k + block).ravel(), minlength=len(block) * k).reshape(len(block), k)
        yield counts[:, clusters].astype(np.float64)


def calibration_gaps(y_true: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """``(N, bins)``: correct - confidence of each image in its confidence bin, so that the
    weighted ECE of a resample is sum over bins of |weights @ gaps| / sum of weights."""
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    bins = np.minimum((confidence * ECE_BINS).astype(int), ECE_BINS - 1)
    gaps = np.zeros((len(y_true), ECE_BINS))
    gaps[np.arange(len(y_true)), bins] = correct - confidence
    return gaps


def weighted_auc(y_true: np.ndarray, probs: np.ndarray, weights: np.ndarray, positive: int) -> np.ndarray:
    """AUC under each row of ``weights``: binary, or the macro one-vs-rest mean."""
    if probs.shape[1] == 2:
        return binary_weighted_auc(y_true == positive, probs[:, positive], weights)
    per_class = np.stack(
        [binary_weighted_auc(y_true == c, probs[:, c], weights) for c in range(probs.shape[1])], axis=1
    )
    # A class absent from the whole test set is left out, as in metrics.roc_auc_ovr; a resample
    # where no class has both positives and negatives has no AUC (NaN, left out of the interval).
    present = np.isin(np.arange(probs.shape[1]), y_true)
    if not present.any():
        return per_class[:, 0]
    kept = np.where(present, per_class, np.nan)
    defined = ~np.isnan(kept)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined.any(axis=1), np.nansum(kept, axis=1) / defined.sum(axis=1), np.nan)


def binary_weighted_auc(is_positive: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The Mann-Whitney AUC (ties count half) of every row of image weights at once.

    For each distinct score value, the weight of the positives and of the negatives that have
    it; the AUC is the sum over values of positives x (negatives below + half the negatives
    level), over positives x negatives; NaN when a row lacks one of the two.
    """
    values, group = np.unique(scores, return_inverse=True)
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(len(values)))
    sorted_weights = weights[:, order]
    positives = np.add.reduceat(sorted_weights * is_positive[order], starts, axis=1)
    negatives = np.add.reduceat(sorted_weights, starts, axis=1) - positives
    below = np.cumsum(negatives, axis=1) - negatives
    pairs = positives.sum(axis=1) * negatives.sum(axis=1)
    wins = (positives * (below + 0.5 * negatives)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / np.where(pairs > 0, pairs, 1), np.nan)
