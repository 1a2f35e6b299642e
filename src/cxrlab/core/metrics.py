"""Classification metrics as plain functions over arrays, returning plain values.

scikit-learn computes what it has (confusion matrix, accuracy, precision, recall, F1); what it
does not have stays here: AUC over the classes present, ROC points at every distinct score
(the threshold rules need them all), and the expected calibration error.

Conventions: ``y_true`` holds class indices, ``probs`` is ``(N, C)`` class probabilities,
``positive`` is the index of the disease class (PNEUMONIA) for the binary metrics.
Sensitivity is the recall of the positive class, specificity the recall of the negative.
"""

from __future__ import annotations

import numpy as np

ECE_BINS = 15  # confidence bins of the expected calibration error


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class (every class listed, present or not)."""
    if len(y_true) == 0:
        return np.zeros((n_classes, n_classes), dtype=np.int64)
    from sklearn import metrics as sk  # here, not at import: predicting never needs scikit-learn

    return sk.confusion_matrix(y_true, y_pred, labels=np.arange(n_classes)).astype(np.int64)


def accuracy(y_true, y_pred) -> float:
    from sklearn import metrics as sk

    return float(sk.accuracy_score(y_true, y_pred)) if len(y_true) else float("nan")


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
    """scikit-learn's precision, recall, F1 and support of every class, 0 where undefined."""
    if len(y_true) == 0:
        zeros = np.zeros(n_classes)
        return zeros, zeros, zeros, zeros.astype(np.int64)
    from sklearn import metrics as sk

    return sk.precision_recall_fscore_support(y_true, y_pred, labels=np.arange(n_classes), zero_division=0.0)


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
    from scipy.stats import rankdata

    y_true, scores = np.asarray(y_true), np.asarray(scores, dtype=np.float64)
    is_positive = y_true == positive
    n_pos, n_neg = int(is_positive.sum()), int((~is_positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


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
