"""Scoring the selected checkpoint once: the threshold is fitted on validation, then the test
split is predicted and summarised. Nothing here chooses anything on the test split."""

from __future__ import annotations

import numpy as np
import torch

from cxrlab.core.decision import choose_threshold, positive_index
from cxrlab.core.metrics import accuracy
from cxrlab.core.summary import classification_report
from cxrlab.training.context import Context
from cxrlab.training.phases import Selection
from cxrlab.training.predict import predict_logits, softmax
from cxrlab.training.records import RunMetrics, ScoresAtHalf

# Metrics of the test report that metrics.json carries as they are (the ones present).
_TEST_KEYS = (
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "ece",
    "confusion_matrix",
    "per_class",
    "threshold",
    "positive_class",
)


def split_probabilities(ctx: Context, split: str) -> np.ndarray:
    """Class probabilities of the current model on ``split``: from the cached features in a
    frozen run (the backbone is fixed, so they are its output), else through the images."""
    config, data, model = ctx.config, ctx.data, ctx.model
    if config.tta == 0 and "train" in ctx.features and split in ctx.features and config.mode == "frozen":
        with torch.no_grad():
            logits = model.head.eval()(ctx.features[split][0].to(ctx.device)).float().cpu().numpy()
    else:
        logits = predict_logits(
            model,
            data.images,
            data.indices(split),
            ctx.device,
            batch_size=config.eval_batch_size,
            tta=config.tta,
            seed=config.seed,
        )
    return softmax(logits.astype(np.float64))


def score_run(ctx: Context, selection: Selection, train_seconds: float) -> RunMetrics:
    """Score the selected checkpoint: threshold chosen on val, then the test split, once."""
    config, data = ctx.config, ctx.data
    classes = data.classes
    binary = len(classes) == 2
    positive = positive_index(classes)
    probs = {split: split_probabilities(ctx, split) for split in ("val", "test")}
    val_labels, test_labels = data.labels[data.indices("val")], data.labels[data.indices("test")]
    threshold = choose_threshold(config.threshold, val_labels, probs["val"], positive) if binary else None
    test = classification_report(test_labels, probs["test"], classes, threshold, positive)
    val = classification_report(val_labels, probs["val"], classes, threshold, positive)
    at_half = classification_report(test_labels, probs["test"], classes, 0.5, positive) if binary else None
    best_row = next(r for r in ctx.history if r.epoch == selection.epoch)
    metrics = RunMetrics(
        test_loss=test["loss"],
        test_accuracy=test["accuracy"],
        **{k: test[k] for k in _TEST_KEYS if k in test},
        threshold_rule=config.threshold if binary else "argmax",
        test_at_half=ScoresAtHalf.model_validate({k: at_half[k] for k in ScoresAtHalf.model_fields if k in at_half})
        if at_half
        else None,
        val_loss=val["loss"],
        val_accuracy_argmax=accuracy(val_labels, probs["val"].argmax(axis=1)),
        val_roc_auc=val.get("roc_auc"),
        train_accuracy_at_best=best_row.train_acc,
        train_seconds=round(train_seconds, 3),
        best_epoch=selection.epoch,
        epochs_run=len(ctx.history),
        n_train=data.count("train"),
        n_val=data.count("val"),
        n_test=data.count("test"),
        classes=classes,
        mode=config.mode,
        model=config.model,
        weights=config.weights,
        tta=config.tta,
    )
    splits = ("val", "test")
    ctx.writer.predictions(
        [data.paths[i] for s in splits for i in data.indices(s)],
        [s for s in splits for _ in data.indices(s)],
        np.concatenate([val_labels, test_labels]),
        np.concatenate([probs["val"], probs["test"]]),
        classes,
    )
    return metrics
