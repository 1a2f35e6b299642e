"""How fast a run converged, read from its epoch records.

Transfer from ImageNet is often claimed to speed training up more than it improves the final
result. A run's convergence is the first epoch at which validation loss comes within 5% of
the lowest the run reached (and validation AUC within 0.005 of the highest), with the
training seconds spent by the end of that epoch (frozen features or activations included,
as in the run's training time). Both are read from validation only.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cxrlab.core.decision import positive_index
from cxrlab.core.metrics import roc_auc, roc_auc_ovr
from cxrlab.training.records import EpochRecord

LOSS_TOLERANCE = 0.05  # relative to the lowest validation loss
AUC_TOLERANCE = 0.005  # absolute, below the highest validation AUC


def validation_summary(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> tuple[float, float, float]:
    """``(loss, accuracy, AUC)`` of logits against labels; AUC of p(positive class) for two
    classes, macro one-vs-rest for more (nan when a class is missing)."""
    loss = float(F.cross_entropy(logits, labels))
    accuracy = float((logits.argmax(1) == labels).float().mean())
    probs = torch.softmax(logits.double(), dim=1).numpy()
    y = labels.numpy()
    if len(classes) == 2:
        auc = roc_auc(y, probs[:, positive_index(classes)], positive=positive_index(classes))
    else:
        auc = roc_auc_ovr(y, probs)
    return loss, accuracy, auc


def convergence(history: list[EpochRecord], feature_seconds: float = 0.0) -> dict[str, float | int | None]:
    """The ``converged_*`` fields of ``RunMetrics`` for the epochs of ``history``."""
    out: dict[str, float | int | None] = {
        "converged_epoch": None,
        "converged_seconds": None,
        "converged_auc_epoch": None,
        "converged_auc_seconds": None,
    }
    if not history:
        return out
    elapsed = feature_seconds + np.cumsum([row.seconds for row in history])
    losses = np.array([row.val_loss for row in history], dtype=np.float64)
    best_loss = np.nanmin(losses)
    first = _first(losses <= best_loss + LOSS_TOLERANCE * abs(best_loss))
    if first is not None:
        out["converged_epoch"], out["converged_seconds"] = history[first].epoch, round(float(elapsed[first]), 3)
    aucs = np.array([np.nan if row.val_auc is None else row.val_auc for row in history], dtype=np.float64)
    if np.isfinite(aucs).any():
        first = _first(aucs >= np.nanmax(aucs) - AUC_TOLERANCE)
        if first is not None:
            out["converged_auc_epoch"] = history[first].epoch
            out["converged_auc_seconds"] = round(float(elapsed[first]), 3)
    return out


def _first(mask: np.ndarray) -> int | None:
    hits = np.flatnonzero(mask)
    return int(hits[0]) if len(hits) else None
