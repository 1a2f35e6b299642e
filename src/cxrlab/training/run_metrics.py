"""``metrics.json`` as a typed record: what a finished run scored, and on what.

``RunMetrics`` holds the test split's numbers at the run's threshold and at 0.5, the
validation numbers, the external sets, timing and the machine's load, and what the run
chose (epoch, threshold, temperature, WiSE coefficient). ``cxrlab.training.records`` reads
it back with the rest of a run directory.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    """A record cxrlab writes: unknown keys are refused, so a misspelt one fails where it is made."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SplitOverlap(Record):
    """What a held-out split shares with the images that trained and validated the run: a
    given ``test/`` folder can hold a training patient's other images, or copies."""

    patients: int = 0  # patients of the split who also have train or val images
    images_of_shared_patients: int = 0  # the split's images of those patients
    identical_images: int = 0  # the split's images byte-identical to a train or val image
    examples: list[str] = Field(default_factory=list)

    @property
    def any(self) -> bool:
        return bool(self.patients or self.identical_images)


class ClassScores(Record):
    precision: float
    recall: float | None
    f1: float
    support: int


class ScoresAtHalf(Record):
    """The test decisions at a fixed 0.5 threshold, beside the validation-chosen one."""

    accuracy: float
    balanced_accuracy: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    precision: float | None = None
    f1: float | None = None


class DistributedInfo(Record):
    world_size: int
    backend: str
    ranks_identical: bool


class ExternalScores(Record):
    """One external labelled set (collected elsewhere), scored once after selection at the
    run's own threshold. ``role`` is "validation" when the set chose anything (a threshold,
    a temperature, an epoch, a mixing coefficient), else "test"."""

    location: str
    role: str = "test"
    n: int
    loss: float
    accuracy: float
    balanced_accuracy: float | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    roc_auc: float | None = None
    ece: float | None = None
    confusion_matrix: list[list[int]]
    threshold: float | None = None


class WiseCurve(Record):
    """WiSE-FT: the weights (1 - a) probe + a fine-tuned for each coefficient a tried, scored on
    the set that chooses; ``alpha`` is the one kept (0: the probe, 1: the fine-tuned epoch)."""

    alphas: list[float]
    losses: list[float]
    accuracies: list[float]
    alpha: float
    chosen_on: str  # "val", or "external:<name>" for a labelled target sample
    finetuned_epoch: int
    seconds: float


class MachineLoad(Record):
    """What the run shared the machine with: wall times on a loaded machine are inflated,
    CPU seconds much less so."""

    threads: int  # torch's intra-op threads
    cpu_count: int | None
    load_average_start: float | None  # 1-minute load average when training began
    load_average_end: float | None

    @property
    def loaded(self) -> bool:
        """More runnable processes than the run's threads on the machine's cores, beside it."""
        loads = [v for v in (self.load_average_start, self.load_average_end) if v is not None]
        cores = self.cpu_count or self.threads
        return bool(loads) and max(loads) > cores + 0.5


class RunMetrics(Record):
    """``metrics.json``: the selected checkpoint scored once on the test split."""

    test_loss: float
    test_accuracy: float
    balanced_accuracy: float | None = None
    sensitivity: float | None = None  # two classes: recall of the positive class
    specificity: float | None = None
    precision: float | None = None
    recall: float | None = None  # more classes: macro recall
    f1: float | None = None
    roc_auc: float | None = None
    ece: float | None = None
    confusion_matrix: list[list[int]]
    per_class: dict[str, ClassScores]
    threshold: float | None = None  # on p(positive_class), chosen on validation
    positive_class: str | None = None
    threshold_rule: str
    test_at_half: ScoresAtHalf | None = Field(None, alias="test_at_threshold_0.5")
    val_loss: float
    # Validation accuracy at the argmax (as history.csv's val_acc), and the validation AUC: the
    # threshold is fitted on these same images, so an accuracy at it would be in-sample.
    val_accuracy_argmax: float | None = None  # None in runs recorded before it was
    val_roc_auc: float | None = None
    # Older runs only: accuracy at the threshold fitted on the same validation images. Read so
    # that those runs still load; never shown as a validation score.
    val_accuracy: float | None = None
    train_accuracy_at_best: float
    train_seconds: float
    train_cpu_seconds: float | None = None  # process user + system time of the same work
    machine: MachineLoad | None = None
    best_epoch: int
    epochs_run: int
    n_train: int
    n_val: int
    n_test: int
    classes: list[str]
    mode: str
    model: str
    weights: str | None
    tta: int
    distributed: DistributedInfo | None = None
    # External sets by name; their per-image probabilities are in predictions.csv under the
    # split "external:<name>".
    external: dict[str, ExternalScores] = Field(default_factory=dict)
    # What the test split shares with train and val (patients, copies): nonzero means the
    # test scores overstate performance on new patients.
    test_overlap: SplitOverlap | None = None
    # The set the epoch, threshold, temperature and WiSE coefficient were chosen on: "val" (the
    # internal validation split) or "external:<name>" (a labelled target sample, role validation).
    selection_set: str = "val"
    temperature: float | None = None  # softmax temperature fitted on the selection set; every probability uses it
    wise: WiseCurve | None = None
    # Convergence (training/convergence.py): the first epoch at which validation loss came
    # within 5% of the run's lowest, and validation AUC within 0.005 of its highest, with the
    # training seconds spent by the end of it.
    converged_epoch: int | None = None
    converged_seconds: float | None = None
    converged_auc_epoch: int | None = None
    converged_auc_seconds: float | None = None
    # What transferred: how the backbone started (pretrained, partial, stats, random, file),
    # how many stages its depth settings count, and the parameters that trained.
    init: str | None = None
    stages: int | None = None
    trainable_params: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The record as written to metrics.json (the keys that were set, by their file names)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)
