"""Labelled sets from elsewhere: external test sets, and the labelled target sample that chooses.

An external set (``--external NAME=PATH``) is loaded before training, so that a wrong path
fails before an hour of work, and scored once, after every choice is made, at the run's own
threshold: it never enters selection. A labelled target sample (``--target-val DIR``) is the
other kind: the epoch, the threshold, the temperature and the WiSE coefficient are chosen on
it, so it is recorded with the role "validation" wherever it appears. When it is also named
as an external set, that entry takes the role; otherwise it is recorded as ``target_val``.

A set named in ``external_validation`` helped choose the run's settings outside the run (a
recipe chosen on it): it is scored like any external set and chooses nothing inside the run,
yet it is recorded with the role "validation", because its numbers are no independent test.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cxrlab.core.decision import positive_index
from cxrlab.core.errors import CxrlabError
from cxrlab.core.summary import classification_report
from cxrlab.data.dataset import Dataset
from cxrlab.training.config import TrainConfig
from cxrlab.training.features import compute_features
from cxrlab.training.predict import predict_logits
from cxrlab.training.run_data import load_run_data
from cxrlab.training.run_metrics import ExternalScores

TARGET_VAL = "target_val"
TEST, VALIDATION = "test", "validation"


@dataclass
class LabelledSet:
    """Images scored by a run: the part of ``dataset`` at ``indices``, with ``labels`` in the
    run's class order."""

    name: str
    location: str
    role: str
    dataset: Dataset
    indices: np.ndarray
    labels: np.ndarray
    chooses: bool = False  # the run's epoch, threshold, temperature and WiSE coefficient are chosen on it

    @property
    def split(self) -> str:
        """The split name of its rows in predictions.csv."""
        return f"external:{self.name}"


def class_remap(found: list[str], classes: list[str], where: str) -> np.ndarray:
    """Index of each class of ``found`` among the run's ``classes`` (names match ignoring case);
    a class the run never learned is an error."""
    known = [c.upper() for c in classes]
    missing = [c for c in found if c.upper() not in known]
    if missing:
        raise CxrlabError(f"{where} has class {missing[0]}, which the run never learned ({', '.join(classes)})")
    return np.array([known.index(c.upper()) for c in found], dtype=np.int64)


def load_scoring_set(
    path: str,
    config: TrainConfig,
    classes: list[str],
    *,
    name: str = "",
    role: str = TEST,
    chooses: bool = False,
    cache_dir: str | None = None,
    on_bad_image: str | None = None,
    show_progress: bool = True,
) -> LabelledSet:
    """A dataset root's test split, or every image of a folder of class folders, decoded at the
    run's image size with its labels in the run's class order (an undecodable image: as
    ``on_bad_image`` says, by default as the run's setting)."""
    dataset = load_run_data(
        config,
        show_progress,
        data=path,
        on_bad_image=on_bad_image or config.on_bad_image,
        # Scored as labelled; a file under two labels counts under each, as the set says.
        on_duplicate_label="keep",
        folder_is_test=True,
        cache_dir=cache_dir or config.cache_dir,
    )
    remap = class_remap(dataset.classes, classes, path)
    indices = dataset.indices("test")
    if len(indices) == 0:
        raise CxrlabError(f"{path} has no test images to score")
    return LabelledSet(name, str(path), role, dataset, indices, remap[dataset.labels[indices]], chooses=chooses)


def labelled_sets(config: TrainConfig, classes: list[str], show_progress: bool = True) -> dict[str, LabelledSet]:
    """Every external set and the labelled target sample of a run, by name, loaded now."""
    sets: dict[str, LabelledSet] = {}
    target = _resolved(config.target_val) if config.target_val else None
    unknown = [name for name in config.external_validation if name not in config.external]
    if unknown:
        raise CxrlabError(
            f"--external-validation {unknown[0]}: no external set of that name (--external NAME=PATH names them)"
        )
    for name, path in config.external.items():
        if not name or name != name.strip() or any(c in name for c in "/\\,="):
            raise CxrlabError(f"--external {name}={path}: name each set with a plain word (NAME=PATH)")
        chooses = target is not None and _resolved(path) == target
        role = VALIDATION if chooses or name in config.external_validation else TEST
        sets[name] = load_scoring_set(
            path, config, classes, name=name, role=role, chooses=chooses, show_progress=show_progress
        )
    if config.target_val and not any(s.chooses for s in sets.values()):
        if TARGET_VAL in sets:
            raise CxrlabError(f"--external {TARGET_VAL}=...: that name is the --target-val set's; choose another")
        sets[TARGET_VAL] = load_scoring_set(
            config.target_val,
            config,
            classes,
            name=TARGET_VAL,
            role=VALIDATION,
            chooses=True,
            show_progress=show_progress,
        )
    for labelled in sets.values():
        if labelled.chooses and len(np.unique(labelled.labels)) < 2:
            raise CxrlabError(f"--target-val {config.target_val}: a sample that chooses needs every class")
    return sets


def selection_name(sets: dict[str, LabelledSet]) -> str:
    """``"val"`` or ``"external:<name>"``: the set a run chooses on."""
    return next((s.split for s in sets.values() if s.chooses), "val")


def set_logits(model, labelled: LabelledSet, device, config: TrainConfig, tta: int = 0) -> np.ndarray:
    return predict_logits(
        model,
        labelled.dataset.images,
        labelled.indices,
        device,
        batch_size=config.eval_batch_size,
        tta=tta,
        seed=config.seed,
    ).astype(np.float64)


def external_scores(
    labelled: LabelledSet, probs: np.ndarray, classes: list[str], threshold: float | None
) -> ExternalScores:
    """The point metrics of one set at the run's threshold (intervals are the report's job)."""
    positive = positive_index(classes)
    report = classification_report(labelled.labels, probs, classes, threshold, positive)
    return ExternalScores(
        location=labelled.location,
        role=labelled.role,
        n=len(labelled.labels),
        loss=report["loss"],
        accuracy=report["accuracy"],
        balanced_accuracy=report.get("balanced_accuracy"),
        sensitivity=report.get("sensitivity"),
        specificity=report.get("specificity"),
        roc_auc=report.get("roc_auc"),
        ece=report.get("ece"),
        confusion_matrix=report["confusion_matrix"],
        threshold=report.get("threshold") if len(classes) == 2 else None,
    )


def _resolved(path: str) -> str:
    return str(Path(path).expanduser().resolve())


def target_features(model, labelled: LabelledSet, device, config: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of the frozen backbone on a labelled set (computed now, not cached: a
    target sample is small), and its labels, for a head phase to be chosen on."""
    features = compute_features(
        model,
        labelled.dataset.images,
        labelled.indices,
        device=device,
        batch_size=config.eval_batch_size,
        show_progress=False,
    )
    return torch.from_numpy(features), torch.from_numpy(labelled.labels)
