"""How a run turns probabilities into a decision: the positive class, the threshold, the call.

Written once, here, and used by training (choosing the threshold on validation), scoring,
``evaluate``, ``predict``, Grad-CAM and the report, so all of them decide alike.
"""

from __future__ import annotations

import numpy as np

from cxrlab.core.metrics import roc_curve

# Rules for the decision threshold on p(positive); each is fitted on validation data only.
THRESHOLD_RULES = ("0.5", "val-youden", "val-balanced")


def positive_index(classes: list[str]) -> int:
    """The disease class: PNEUMONIA when present, else the second class."""
    upper = [c.upper() for c in classes]
    return upper.index("PNEUMONIA") if "PNEUMONIA" in upper else min(1, len(classes) - 1)


def decide(probs, threshold: float | None = None, positive: int = 1) -> np.ndarray:
    """Class indices: for two classes ``p(positive) >= threshold``, else (or without a
    threshold) the most probable class."""
    probs = np.asarray(probs)
    if threshold is None or probs.shape[1] != 2:
        return probs.argmax(axis=1)
    return np.where(probs[:, positive] >= threshold, positive, 1 - positive)


def choose_threshold(rule: str, labels: np.ndarray, probs: np.ndarray, positive: int) -> float:
    """The decision threshold on p(positive) by ``rule``, fitted on validation ``labels`` and
    ``probs``; 0.5 when the rule says so or validation holds one class only."""
    if rule == "0.5" or len(np.unique(labels)) < 2:
        return 0.5
    scores = probs[:, positive]
    if rule == "val-youden":
        return youden_threshold(labels, scores, positive)
    return equal_error_threshold(labels, scores, positive)


def youden_threshold(y_true, scores, positive: int = 1) -> float:
    """The threshold that maximises sensitivity + specificity - 1 (Youden's J)."""
    fpr, tpr, thresholds = roc_curve(y_true, scores, positive)
    best = int(np.argmax(tpr - fpr))
    return _finite_threshold(thresholds, best)


def equal_error_threshold(y_true, scores, positive: int = 1) -> float:
    """The threshold where sensitivity and specificity are closest to equal."""
    fpr, tpr, thresholds = roc_curve(y_true, scores, positive)
    best = int(np.argmin(np.abs(tpr - (1 - fpr))))
    return _finite_threshold(thresholds, best)


def _finite_threshold(thresholds: np.ndarray, index: int) -> float:
    if np.isinf(thresholds[index]):
        index = min(index + 1, len(thresholds) - 1)
    return float(thresholds[index])
