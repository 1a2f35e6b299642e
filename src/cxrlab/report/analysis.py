"""The numbers the report and ``cxrlab compare`` show for a run and for a pair of runs.

Everything is computed from a run directory's records (``predictions.csv``, ``history.csv``,
``config.yaml``) read through ``cxrlab.training.rundir``: the test predictions at the run's own
validation-chosen threshold, with intervals; the curves' generalisation gap and stability;
and paired tests of two runs scored on the same test images.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from cxrlab.core.decision import decide, positive_index
from cxrlab.core.errors import CxrlabError
from cxrlab.core.modes import mode_title
from cxrlab.core.summary import classification_report
from cxrlab.evaluate import stats
from cxrlab.training.records import EpochRecord, RunRecord

# Settings that tell two runs of one model and mode apart, in the order a reader scans them.
SETTING_KEYS = ("lr", "epochs", "weight_decay", "batch_size", "image_size", "optimizer", "augment", "seed")
SHORT = {
    "lr": "lr",
    "epochs": "ep",
    "weight_decay": "wd",
    "batch_size": "bs",
    "image_size": "px",
    "optimizer": "opt",
    "augment": "aug",
    "seed": "seed",
}


@dataclass
class ScoredTest:
    """A run's test predictions, as the arrays the statistics take."""

    paths: list[str]
    labels: np.ndarray  # (N,) class indices
    probs: np.ndarray  # (N, C)
    predicted: np.ndarray  # (N,) at the run's threshold
    classes: list[str]
    positive: int
    threshold: float | None

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels

    @property
    def binary(self) -> bool:
        return len(self.classes) == 2


def scored_test(run: RunRecord) -> ScoredTest:
    """The test split of ``run``'s predictions.csv, predicted at the run's threshold."""
    paths, labels, probs = run.prediction_arrays("test")
    classes = run.classes
    positive = positive_index(classes)
    threshold = run.threshold if len(classes) == 2 else None
    return ScoredTest(paths, labels, probs, decide(probs, threshold, positive), classes, positive, threshold)


def run_labels(runs: list[RunRecord]) -> list[str]:
    """Short readable names: "model, mode", plus the settings that differ where that is not
    enough, plus the run id where even that is not."""
    base = [f"{r.config.model}, {mode_title(r.config.mode)}" for r in runs]
    counts = Counter(base)
    labels = list(base)
    for i, run in enumerate(runs):
        if counts[base[i]] > 1:
            twins = [r for r, label in zip(runs, base) if label == base[i]]
            differing = [k for k in SETTING_KEYS if len({str(t.config.setting(k)) for t in twins}) > 1]
            if differing:
                labels[i] += " " + " ".join(f"{SHORT[k]}={_setting(run.config.setting(k))}" for k in differing)
    counts = Counter(labels)
    return [label if counts[label] == 1 else f"{label} ({run.run_id})" for label, run in zip(labels, runs)]


def _setting(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def selected_epoch(epochs: list[EpochRecord], best_epoch: int) -> EpochRecord | None:
    """The history row of the epoch whose checkpoint the run kept."""
    return next((row for row in epochs if row.epoch == best_epoch), None)


def generalisation_gap(epochs: list[EpochRecord], best_epoch: int) -> float | None:
    """Train accuracy minus validation accuracy at the selected epoch (positive: overfitting).

    Train accuracy is measured during the epoch, on augmented images when the run augments,
    so a small negative gap is no cause for alarm."""
    row = selected_epoch(epochs, best_epoch)
    if row is None:
        return None
    return row.train_acc - row.val_acc


def curve_stability(epochs: list[EpochRecord]) -> float | None:
    """Mean absolute epoch-to-epoch change of validation loss over the last half of training
    (lower is steadier); None with fewer than two epochs."""
    losses = np.array([r.val_loss for r in epochs])
    if len(losses) < 2:
        return None
    steps = np.abs(np.diff(losses))
    return float(steps[len(steps) // 2 :].mean())


def run_analysis(run: RunRecord, n_boot: int = stats.N_BOOT, seed: int = 0) -> dict:
    """The test analysis of one run: metrics at its threshold, with 95% intervals (bootstrap for
    accuracy and AUC, Wilson for sensitivity, specificity and per-class recall), the confusion
    matrix, per-class precision/recall/F1, calibration, and the curves' gap and stability."""
    test = scored_test(run)
    if len(test.labels) == 0:
        raise CxrlabError(f"run {run.path} has no test predictions in predictions.csv: it cannot be analysed")
    report = classification_report(test.labels, test.probs, test.classes, test.threshold, test.positive)
    recall_intervals = {
        name: stats.wilson_interval(int(((test.labels == c) & test.correct).sum()), int((test.labels == c).sum()))
        for c, name in enumerate(test.classes)
    }
    result = {
        "run": run.run_id,
        "path": str(run.path),
        "model": run.config.model,
        "mode": run.config.mode,
        "classes": test.classes,
        "binary": test.binary,
        "positive_class": test.classes[test.positive] if test.binary else None,
        "n_test": len(test.labels),
        "n_val": run.scores.n_val,
        "n_train": run.scores.n_train,
        "threshold": test.threshold,
        "threshold_rule": run.scores.threshold_rule,
        "best_epoch": run.scores.best_epoch,
        "epochs_run": run.scores.epochs_run,
        "select": run.config.select,
        "val_accuracy": run.scores.val_accuracy,
        "val_loss": run.scores.val_loss,
        "test_loss": report["loss"],
        "accuracy": stats.bootstrap_accuracy(test.labels, test.predicted, n_boot=n_boot, seed=seed).as_dict(),
        "roc_auc": stats.bootstrap_auc(test.labels, test.probs, test.positive, n_boot=n_boot, seed=seed).as_dict(),
        "balanced_accuracy": report["balanced_accuracy"],
        "macro_f1": float(np.mean([v["f1"] for v in report["per_class"].values()])),
        "ece": report["ece"],
        "confusion_matrix": report["confusion_matrix"],
        "per_class": {
            name: {**values, "recall_interval": recall_intervals[name].as_dict()}
            for name, values in report["per_class"].items()
        },
        "train_seconds": run.scores.train_seconds,
        "generalisation_gap": generalisation_gap(run.epochs, run.scores.best_epoch),
        "stability": curve_stability(run.epochs),
        "image_size": run.config.image_size,
        "settings": {k: run.config.setting(k) for k in SETTING_KEYS},
    }
    if test.binary:
        intervals = stats.sensitivity_specificity(test.labels, test.predicted, test.positive)
        result["sensitivity"] = intervals["sensitivity"].as_dict()
        result["specificity"] = intervals["specificity"].as_dict()
    else:
        result["sensitivity"] = result["specificity"] = None
    return result


def same_test_images(a: RunRecord, b: RunRecord, test_a: ScoredTest, test_b: ScoredTest) -> np.ndarray:
    """Positions in ``test_b`` of ``test_a``'s images, so that the two line up image by image;
    refuses runs that were scored on different test images."""
    where = {path: i for i, path in enumerate(test_b.paths)}
    if len(test_a.paths) != len(test_b.paths) or len(where) != len(test_b.paths) or set(where) != set(test_a.paths):
        common = len(set(test_a.paths) & set(where))
        raise CxrlabError(
            f"runs {a.run_id} and {b.run_id} were scored on different test images ({len(test_a.paths)} and "
            f"{len(test_b.paths)}, {common} in common): compare runs of the same data and split seed"
        )
    order = np.array([where[p] for p in test_a.paths], dtype=np.int64)
    names_a = [test_a.classes[i] for i in test_a.labels]
    names_b = [test_b.classes[i] for i in test_b.labels[order]]
    if names_a != names_b:
        raise CxrlabError(
            f"runs {a.run_id} and {b.run_id} label the same test images differently: "
            f"compare runs of the same data and --labels"
        )
    return order


def paired_comparison(
    a: RunRecord, b: RunRecord, name_a: str = "A", name_b: str = "B", n_boot: int = stats.N_BOOT, seed: int = 0
) -> dict:
    """McNemar's exact test and paired bootstrap intervals of the accuracy (and AUC) difference
    A - B on the same test images."""
    test_a, test_b = scored_test(a), scored_test(b)
    order = same_test_images(a, b, test_a, test_b)
    correct_b = test_b.correct[order]
    mcnemar = stats.mcnemar_exact(test_a.correct, correct_b)
    # Each image scores +1, 0 or -1: A right and B wrong, both alike, or the reverse.
    difference = stats.bootstrap_mean(test_a.correct.astype(np.float64) - correct_b, n_boot=n_boot, seed=seed)
    result = {
        "a": a.run_id,
        "b": b.run_id,
        "name_a": name_a,
        "name_b": name_b,
        "n": mcnemar["n"],
        "a_only": mcnemar["a_only"],
        "b_only": mcnemar["b_only"],
        "p_value": mcnemar["p_value"],
        "verdict": stats.mcnemar_verdict(mcnemar, name_a, name_b),
        "accuracy_difference": difference.as_dict(),
        "auc_difference": None,
    }
    if test_a.classes == test_b.classes:
        result["auc_difference"] = stats.paired_bootstrap_difference(
            test_a.labels,
            test_a.predicted,
            test_b.predicted[order],
            "auc",
            test_a.probs,
            test_b.probs[order],
            positive=test_a.positive,
            n_boot=n_boot,
            seed=seed,
        ).as_dict()
    return result


def confident_mistakes(test: ScoredTest, k: int = 8) -> np.ndarray:
    """Indices of the ``k`` wrong test predictions the run was surest of (highest probability
    of the class it predicted)."""
    wrong = np.flatnonzero(~test.correct)
    confidence = test.probs[wrong, test.predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:k]


def confident_hits(test: ScoredTest, k: int = 4) -> np.ndarray:
    """Indices of ``k`` right test predictions the run was surest of, disease class first."""
    right = np.flatnonzero(test.correct)
    confidence = test.probs[right, test.predicted[right]]
    disease_first = (test.predicted[right] != test.positive).astype(int) if test.binary else np.zeros(len(right))
    return right[np.lexsort((-confidence, disease_first))][:k]


def best_run(runs: list[RunRecord]) -> RunRecord | None:
    """The run with the highest validation accuracy (ties: lower validation loss); the test
    split plays no part in choosing."""
    if not runs:
        return None
    return min(
        runs,
        key=lambda r: (
            -r.scores.val_accuracy,
            r.scores.val_loss,
            r.run_id,
        ),
    )
