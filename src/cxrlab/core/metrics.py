"""Classification metrics as plain functions over arrays, returning plain values.

Every metric is computed here with numpy, from the confusion matrix where it can be. They are
scikit-learn's definitions (zero where a ratio is undefined, as its ``zero_division=0``), and
the test suite checks them against scikit-learn; importing scikit-learn and scipy cost every
``cxrlab train`` about 1.5 s for a handful of counts. Beyond scikit-learn: AUC over the classes
present, ROC points at every distinct score (the threshold rules need them all), and the
expected calibration error.

Conventions: ``y_true`` holds class indices, ``probs`` is ``(N, C)`` class probabilities,
``positive`` is the index of the disease class (PNEUMONIA) for the binary metrics.
Sensitivity is the recall of the positive class, specificity the recall of the negative.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15  # confidence bins of the expected calibration error


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class (every class listed, present or not)."""
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    cells = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return cells.reshape(n_classes, n_classes)


def accuracy(y_true, y_pred) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if len(y_true) else float("nan")


def recall_per_class(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Recall of each class; NaN for a class absent from ``y_true`` (its recall is undefined)."""
    _, recall, _, support = _scores_per_class(y_true, y_pred, n_classes)
    return np.where(support > 0, recall, np.nan)


def precision_per_class(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Precision of each class; 0 for a class never predicted."""
    return _scores_per_class(y_true, y_pred, n_classes)[0]


def f1_per_class(y_true, y_pred, n_classes: int) -> np.ndarray:
    """F1 of each class; 0 where precision and recall are both 0 or undefined."""
    return _scores_per_class(y_true, y_pred, n_classes)[2]


def balanced_accuracy(y_true, y_pred, n_classes: int) -> float:
    """Mean recall over the classes present in ``y_true``."""
    recalls = recall_per_class(y_true, y_pred, n_classes)
    return float(np.nanmean(recalls)) if not np.all(np.isnan(recalls)) else float("nan")


def _scores_per_class(y_true, y_pred, n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support of every class, 0 where a ratio is undefined."""
    counts = confusion_matrix(y_true, y_pred, n_classes)
    hits = np.diag(counts).astype(np.float64)
    support, predicted = counts.sum(axis=1), counts.sum(axis=0)
    precision = _ratio(hits, predicted)
    recall = _ratio(hits, support)
    # F1 as 2TP / (2TP + FP + FN), which is 0 (not undefined) wherever TP is 0, as in scikit-learn.
    f1 = _ratio(2 * hits, predicted + support)
    return precision, recall, f1, support


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def sensitivity(y_true, y_pred, positive: int = 1) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    mask = y_true == positive
    return float((y_pred[mask] == positive).mean()) if mask.any() else float("nan")


def specificity(y_true, y_pred, positive: int = 1) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    mask = y_true != positive
    return float((y_pred[mask] != positive).mean()) if mask.any() else float("nan")


def roc_auc(y_true, scores, positive: int = 1) -> float:
    """Area under the ROC curve of ``scores`` for ``positive``: the Mann-Whitney U statistic,
    ties counted half."""
    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    is_positive = y_true == positive
    n_pos, n_neg = int(is_positive.sum()), int((~is_positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = average_ranks(scores)
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_ranks(values) -> np.ndarray:
    """Ranks from 1, ties given the mean of the ranks they span (scipy's ``rankdata``); all NaN
    when any value is NaN, since NaN has no rank."""
    values = np.asarray(values)
    if values.dtype.kind == "f" and np.isnan(values).any():
        return np.full(len(values), np.nan)
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    tie_of = np.cumsum(starts) - 1  # which run of equal values each sorted value is in
    bounds = np.r_[np.flatnonzero(starts), len(values)]  # each run spans ranks bounds[i]+1 .. bounds[i+1]
    ranks = np.empty(len(values))
    ranks[order] = 0.5 * (bounds[tie_of] + bounds[tie_of + 1] + 1)
    return ranks


def roc_auc_ovr(y_true, probs) -> float:
    """Macro one-vs-rest AUC over the classes present in ``y_true``."""
    probs = np.asarray(probs)
    aucs = [roc_auc(y_true, probs[:, c], positive=c) for c in range(probs.shape[1])]
    aucs = [a for a in aucs if not np.isnan(a)]
    return float(np.mean(aucs)) if aucs else float("nan")


def roc_curve(y_true, scores, positive: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False positive rates, true positive rates and thresholds, highest threshold first."""
    y_true, scores = np.asarray(y_true) == positive, np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    scores, y_true = scores[order], y_true[order]
    distinct = np.r_[np.flatnonzero(np.diff(scores)), len(scores) - 1]
    tps = np.cumsum(y_true)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / max(1, y_true.sum())]
    fpr = np.r_[0.0, fps / max(1, (~y_true).sum())]
    return fpr, tpr, np.r_[np.inf, scores[distinct]]


def log_loss(y_true, probs, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class (the cross-entropy loss)."""
    probs = np.asarray(probs, dtype=np.float64)
    picked = probs[np.arange(len(probs)), np.asarray(y_true, dtype=np.int64)]
    return float(-np.log(np.clip(picked, eps, 1.0)).mean())


def expected_calibration_error(y_true, probs, n_bins: int = ECE_BINS) -> float:
    """Confidence-binned |accuracy - confidence|, weighted by bin size (top-label ECE)."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence, predicted = probs.max(axis=1), probs.argmax(axis=1)
    correct = predicted == np.asarray(y_true)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    error = 0.0
    for b in np.unique(bins):
        in_bin = bins == b
        error += in_bin.mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    return float(error)
