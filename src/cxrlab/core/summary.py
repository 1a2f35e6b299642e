"""Every summary metric of one prediction set at one decision rule, as a JSON-ready dict."""

from __future__ import annotations

import numpy as np

from cxrlab.core.decision import decide
from cxrlab.core.metrics import (
    accuracy,
    balanced_accuracy,
    confusion_matrix,
    expected_calibration_error,
    f1_per_class,
    log_loss,
    precision_per_class,
    recall_per_class,
    roc_auc,
    roc_auc_ovr,
    sensitivity,
    specificity,
)


def classification_report(
    y_true, probs, classes: list[str], threshold: float | None = None, positive: int | None = None
) -> dict:
    """Every summary metric of one prediction set, as a JSON-ready dict."""
    y_true, probs = np.asarray(y_true, dtype=np.int64), np.asarray(probs, dtype=np.float64)
    n_classes = len(classes)
    binary = n_classes == 2
    if positive is None:
        positive = 1
    y_pred = decide(probs, threshold if binary else None, positive)
    report = {
        "n": len(y_true),
        "loss": log_loss(y_true, probs),
        "accuracy": accuracy(y_true, y_pred),
        "balanced_accuracy": balanced_accuracy(y_true, y_pred, n_classes),
        "confusion_matrix": confusion_matrix(y_true, y_pred, n_classes).tolist(),
        "ece": expected_calibration_error(y_true, probs),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(
                classes,
                precision_per_class(y_true, y_pred, n_classes),
                recall_per_class(y_true, y_pred, n_classes),
                f1_per_class(y_true, y_pred, n_classes),
                np.bincount(y_true, minlength=n_classes),
            )
        },
    }
    if binary:
        report.update(
            positive_class=classes[positive],
            threshold=0.5 if threshold is None else float(threshold),
            sensitivity=sensitivity(y_true, y_pred, positive),
            specificity=specificity(y_true, y_pred, positive),
            precision=float(precision_per_class(y_true, y_pred, 2)[positive]),
            f1=float(f1_per_class(y_true, y_pred, 2)[positive]),
            roc_auc=roc_auc(y_true, probs[:, positive], positive),
        )
    else:
        report.update(
            precision=float(precision_per_class(y_true, y_pred, n_classes).mean()),
            recall=float(np.nanmean(recall_per_class(y_true, y_pred, n_classes))),
            f1=float(f1_per_class(y_true, y_pred, n_classes).mean()),
            roc_auc=roc_auc_ovr(y_true, probs),
        )
    return report
