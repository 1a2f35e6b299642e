"""The numbers the report and ``cxrlab compare`` show for one run, as typed records.

Everything is computed from a run directory's records (``predictions.csv``, ``history.csv``,
``config.yaml``, ``metrics.json``) read through ``cxrlab.training.records``: on each
evaluation set (the internal test split, and each external set) the predictions at the
run's own validation-chosen threshold with 95% intervals that resample patients; the
validation numbers the run was chosen by; the curves' generalisation gap and stability.
A misspelt field fails where the record is built, not when a report renders.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict

from cxrlab.core.errors import CxrlabError
from cxrlab.core.modes import mode_title
from cxrlab.core.summary import classification_report
from cxrlab.core.text import format_value
from cxrlab.evaluate import stats
from cxrlab.report.scored import IMAGE, TEST, ScoredSet, evaluation_sets, scored_set
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
# What transferred, named in a label only where a run sets it away from its plain value.
TRANSFER_PLAIN = {
    "freeze_blocks": (None,),
    "transfer_blocks": (None,),
    "weights": ("imagenet", "none"),
    "train_fraction": (1.0,),
}
TRANSFER_SHORT = {
    "freeze_blocks": "freeze",
    "transfer_blocks": "transfer",
    "weights": "weights",
    "train_fraction": "fraction",
}


def _nan_for_none(value: Any) -> Any:
    return math.nan if value is None else value


# A number that may be undefined (NaN); comparison.json writes it as null and reads it back.
Number = Annotated[float, BeforeValidator(_nan_for_none)]


class Typed(BaseModel):
    """A record of the analysis: fields fixed, values checked where it is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Estimate(Typed):
    """A value with its 95% interval (NaN bounds where it has none)."""

    estimate: Number
    low: Number = math.nan
    high: Number = math.nan

    @classmethod
    def of(cls, interval: stats.Interval) -> Estimate:
        return cls(estimate=interval.estimate, low=interval.low, high=interval.high)

    @property
    def has_interval(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def excludes_zero(self) -> bool:
        return self.has_interval and (self.low > 0 or self.high < 0)

    def negated(self) -> Estimate:
        return Estimate(estimate=-self.estimate, low=-self.high, high=-self.low)


class ClassResult(Typed):
    precision: Number
    recall: Number | None
    f1: Number
    support: int
    recall_interval: Estimate


class SetResult(Typed):
    """One run on one evaluation set: metrics at its threshold, with 95% intervals."""

    name: str  # "test" or the external set's name
    role: str  # "test" or "validation"
    n: int
    n_patients: int
    unit: str  # what the intervals resample: "patient" or "image"
    accuracy: Estimate
    roc_auc: Estimate
    ece: Estimate
    sensitivity: Estimate | None  # two classes only
    specificity: Estimate | None
    balanced_accuracy: Number
    macro_f1: Number
    loss: Number
    confusion_matrix: list[list[int]]
    per_class: dict[str, ClassResult]


class RunAnalysis(Typed):
    """One run: how it was chosen (validation), and its results on each evaluation set."""

    run: str
    label: str
    path: str
    model: str
    mode: str
    classes: list[str]
    binary: bool
    positive_class: str | None
    threshold: float | None
    threshold_rule: str
    select: str
    n_train: int
    n_val: int
    best_epoch: int
    epochs_run: int
    val_loss: float
    val_accuracy_argmax: float | None
    val_roc_auc: float | None
    train_seconds: float | None
    train_cpu_seconds: float | None  # process CPU seconds: what a loaded machine inflates far less than wall time
    loaded: bool  # measured while other work ran (load average above the cores)
    generalisation_gap: float | None
    stability: float | None
    image_size: int
    settings: dict[str, Any]
    test: SetResult
    external: dict[str, SetResult] = {}

    def on(self, name: str) -> SetResult | None:
        """The results on evaluation set ``name`` ("test" or an external set), if it has them."""
        return self.test if name == TEST else self.external.get(name)

    def at(self, name: str) -> SetResult:
        """The results on evaluation set ``name``, which the run has."""
        return self.test if name == TEST else self.external[name]


def set_result(scored: ScoredSet, n_boot: int = stats.N_BOOT, seed: int = 0) -> SetResult:
    """The metrics of one evaluation set with intervals: every interval resamples the set's
    patients (images where file names name no patient); Wilson intervals for per-class recall
    where images are independent."""
    if len(scored.labels) == 0:
        raise CxrlabError(f"no predictions on the {scored.name} set in predictions.csv: it cannot be analysed")
    labels, probs, predicted = scored.labels, scored.probs, scored.predicted
    clusters = None if scored.unit == IMAGE else scored.clusters
    report = classification_report(labels, probs, scored.classes, scored.threshold, scored.positive)
    per_class = {}
    for c, (name, values) in enumerate(report["per_class"].items()):
        of_class = labels == c
        recall = (
            stats.wilson_interval(int((of_class & scored.correct).sum()), int(of_class.sum()))
            if clusters is None
            else stats.bootstrap_proportion(scored.correct, of_class, clusters, n_boot, seed=seed)
        )
        per_class[name] = ClassResult(**values, recall_interval=Estimate.of(recall))
    rates = (
        stats.sensitivity_specificity(labels, predicted, scored.positive, clusters, n_boot, seed=seed)
        if scored.binary
        else None
    )
    return SetResult(
        name=scored.name,
        role=scored.role,
        n=len(labels),
        n_patients=scored.n_patients,
        unit=scored.unit,
        accuracy=Estimate.of(stats.bootstrap_accuracy(labels, predicted, clusters, n_boot, seed=seed)),
        roc_auc=Estimate.of(stats.bootstrap_auc(labels, probs, scored.positive, clusters, n_boot, seed=seed)),
        ece=Estimate.of(stats.bootstrap_ece(labels, probs, clusters, n_boot, seed=seed)),
        sensitivity=Estimate.of(rates["sensitivity"]) if rates else None,
        specificity=Estimate.of(rates["specificity"]) if rates else None,
        balanced_accuracy=report["balanced_accuracy"],
        macro_f1=float(np.mean([v["f1"] for v in report["per_class"].values()])),
        loss=report["loss"],
        confusion_matrix=report["confusion_matrix"],
        per_class=per_class,
    )


def run_analysis(
    run: RunRecord,
    label: str | None = None,
    n_boot: int = stats.N_BOOT,
    seed: int = 0,
    scored: dict[str, ScoredSet] | None = None,
) -> RunAnalysis:
    """The analysis of one finished run on every evaluation set it was scored on; ``scored``
    may hold its sets already read."""
    scored = dict(scored or {})
    for name in evaluation_sets(run):
        scored.setdefault(name, scored_set(run, name))
    results = {name: set_result(s, n_boot, seed) for name, s in scored.items()}
    metrics, config = run.scores, run.config
    binary = len(run.classes) == 2
    return RunAnalysis(
        run=run.run_id,
        label=label or run_labels([run])[0],
        path=str(run.path),
        model=config.model,
        mode=config.mode,
        classes=run.classes,
        binary=binary,
        positive_class=run.classes[run.positive] if binary else None,
        threshold=run.threshold if binary else None,
        threshold_rule=metrics.threshold_rule,
        select=config.select,
        n_train=metrics.n_train,
        n_val=metrics.n_val,
        best_epoch=metrics.best_epoch,
        epochs_run=metrics.epochs_run,
        val_loss=metrics.val_loss,
        val_accuracy_argmax=validation_accuracy(run),
        val_roc_auc=metrics.val_roc_auc,
        train_seconds=metrics.train_seconds,
        train_cpu_seconds=metrics.train_cpu_seconds,
        loaded=metrics.machine is not None and metrics.machine.loaded,
        generalisation_gap=generalisation_gap(run.epochs, metrics.best_epoch),
        stability=curve_stability(run.epochs),
        image_size=config.image_size,
        settings={k: config.setting(k) for k in SETTING_KEYS},
        test=results.pop(TEST),
        external=results,
    )


def validation_accuracy(run: RunRecord) -> float | None:
    """Validation accuracy at the argmax: recorded by newer runs, else history.csv's val_acc at
    the kept epoch (the same number). Never the accuracy at a threshold fitted on validation."""
    if run.scores.val_accuracy_argmax is not None:
        return run.scores.val_accuracy_argmax
    row = selected_epoch(run.epochs, run.scores.best_epoch)
    return row.val_acc if row is not None else None


def run_labels(runs: list[RunRecord]) -> list[str]:
    """Short readable names: "model, mode", plus the settings that differ where that is not
    enough (what transferred only where a run sets it away from its plain value: ``freeze=3``),
    plus the run id where even that is not."""
    base = [f"{r.config.model}, {mode_title(r.config.mode)}" for r in runs]
    counts = Counter(base)
    labels = list(base)
    for i, run in enumerate(runs):
        if counts[base[i]] > 1:
            twins = [r for r, label in zip(runs, base) if label == base[i]]
            differing = [k for k in SETTING_KEYS if len({str(t.config.setting(k)) for t in twins}) > 1]
            words = [f"{SHORT[k]}={format_value(run.config.setting(k))}" for k in differing]
            words += [
                f"{TRANSFER_SHORT[k]}={format_value(run.config.setting(k))}"
                for k, plain in TRANSFER_PLAIN.items()
                if run.config.setting(k) not in plain and len({str(t.config.setting(k)) for t in twins}) > 1
            ]
            if words:
                labels[i] += " " + " ".join(words)
    counts = Counter(labels)
    return [label if counts[label] == 1 else f"{label} ({run.run_id})" for label, run in zip(labels, runs)]


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


def selection_key(run: RunRecord) -> tuple:
    """The one rule that chooses among runs, as it chooses the epoch and the Optuna objective:
    the lowest validation loss, ties by the higher validation AUC, then the run id."""
    auc = run.scores.val_roc_auc
    return (run.scores.val_loss, -auc if auc is not None and not math.isnan(auc) else math.inf, run.run_id)


def best_run(runs: list[RunRecord]) -> RunRecord | None:
    """The run with the lowest validation loss (ties: the higher validation AUC); the test
    split and the external sets play no part in choosing. None when there are no runs."""
    return min(runs, key=selection_key) if runs else None
