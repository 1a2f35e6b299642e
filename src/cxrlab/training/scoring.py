"""Scoring the selected checkpoint once: the temperature and the threshold are fitted on the set
that chooses (the validation split, or a labelled target sample), then the test split and the
external sets are predicted and summarised. Nothing here chooses anything on a test set."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cxrlab.core.decision import choose_threshold, positive_index
from cxrlab.core.metrics import accuracy
from cxrlab.core.summary import classification_report
from cxrlab.training.calibration import fit_temperature, probabilities
from cxrlab.training.context import Context
from cxrlab.training.external import external_scores, set_logits
from cxrlab.training.phases import Selection
from cxrlab.training.predict import predict_logits
from cxrlab.training.run_metrics import RunMetrics, ScoresAtHalf

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


def split_logits(ctx: Context, split: str) -> np.ndarray:
    """Logits of the current model on ``split``: from the cached features in a frozen run (the
    backbone is fixed, so they are its output), else through the images."""
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
    return logits.astype(np.float64)


def score_run(ctx: Context, selection: Selection, train_seconds: float) -> RunMetrics:
    """Score the selected weights: temperature and threshold chosen on the set that chooses
    (validation, or a labelled target sample), then the test split and the external sets, once."""
    config, data = ctx.config, ctx.data
    classes = data.classes
    binary = len(classes) == 2
    positive = positive_index(classes)
    logits = {split: split_logits(ctx, split) for split in ("val", "test")}
    for labelled in ctx.external.values():
        logits[labelled.split] = set_logits(ctx.model, labelled, ctx.device, config, tta=config.tta)
    labels = {split: data.labels[data.indices(split)] for split in ("val", "test")}
    labels.update({s.split: s.labels for s in ctx.external.values()})
    chooser = ctx.selection_set
    temperature = fit_temperature(logits[chooser], labels[chooser]) if config.temperature_scaling else None
    probs = {split: probabilities(values, temperature) for split, values in logits.items()}
    threshold = choose_threshold(config.threshold, labels[chooser], probs[chooser], positive) if binary else None
    test = classification_report(labels["test"], probs["test"], classes, threshold, positive)
    val = classification_report(labels["val"], probs["val"], classes, threshold, positive)
    at_half = classification_report(labels["test"], probs["test"], classes, 0.5, positive) if binary else None
    best_row = next(r for r in ctx.history if r.epoch == selection.epoch)
    # Passed only when there is something to record: metrics.json holds the fields that were set.
    optional: dict[str, Any] = {
        "external": {n: external_scores(s, probs[s.split], classes, threshold) for n, s in ctx.external.items()},
        "temperature": temperature,
    }
    metrics = RunMetrics(
        test_loss=test["loss"],
        test_accuracy=test["accuracy"],
        **{k: test[k] for k in _TEST_KEYS if k in test},
        threshold_rule=config.threshold if binary else "argmax",
        test_at_half=ScoresAtHalf.model_validate({k: at_half[k] for k in ScoresAtHalf.model_fields if k in at_half})
        if at_half
        else None,
        val_loss=val["loss"],
        val_accuracy_argmax=accuracy(labels["val"], probs["val"].argmax(axis=1)),
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
        selection_set=chooser,
        **{k: v for k, v in optional.items() if v},
    )
    _write_predictions(ctx, labels, probs)
    return metrics


def _write_predictions(ctx: Context, labels: dict[str, np.ndarray], probs: dict[str, np.ndarray]) -> None:
    """predictions.csv: val and test, then each external set as split ``external:<name>``."""
    data = ctx.data
    paths = {split: [data.paths[i] for i in data.indices(split)] for split in ("val", "test")}
    paths.update({s.split: [s.dataset.paths[i] for i in s.indices] for s in ctx.external.values()})
    splits = list(paths)
    ctx.writer.predictions(
        [p for s in splits for p in paths[s]],
        [s for s in splits for _ in paths[s]],
        np.concatenate([labels[s] for s in splits]),
        np.concatenate([probs[s] for s in splits]),
        data.classes,
    )
