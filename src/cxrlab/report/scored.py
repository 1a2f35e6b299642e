"""A run's saved predictions on one evaluation set, as the arrays the statistics take.

An evaluation set is the run's internal test split (``test`` in predictions.csv) or one of
its external labelled sets (``external:<name>``, scored once after selection; its ``role``
is "validation" when it chose anything, else "test"). Each image carries its patient, the
unit the statistics resample: Kermany file names name the patient
(``cxrlab.data.patients.patient_id``); an image whose name does not, or a MedMNIST
``file.npz#split/index`` entry, is its own patient.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from cxrlab.core.decision import decide, positive_index
from cxrlab.core.errors import CxrlabError
from cxrlab.data.patients import patient_id
from cxrlab.evaluate.stats import cluster_index
from cxrlab.training.records import RunRecord

TEST = "test"  # the internal test split's name among a run's evaluation sets
EXTERNAL_PREFIX = "external:"
PATIENT, IMAGE = "patient", "image"


@dataclass(frozen=True)
class ScoredSet:
    """A run's predictions on one evaluation set, decided at the run's threshold."""

    name: str  # "test" or the external set's name
    role: str  # "test" or "validation"
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

    @cached_property
    def patients(self) -> list[str]:
        return [patient_of(p) for p in self.paths]

    @cached_property
    def unit(self) -> str:
        """``patient`` when file names name patients, else ``image`` (each its own patient)."""
        return PATIENT if any(names_patient(p) for p in self.paths) else IMAGE

    @cached_property
    def clusters(self) -> np.ndarray:
        """The patient number of each image (each image its own when the unit is the image)."""
        return cluster_index(self.patients if self.unit == PATIENT else None, len(self.paths))

    @property
    def n_patients(self) -> int:
        return int(self.clusters.max()) + 1 if len(self.paths) else 0


def patient_of(path: str) -> str:
    """The patient of an image: from a Kermany file name, else the image itself."""
    return patient_id(path) if names_patient(path) else path


def names_patient(path: str) -> bool:
    """Whether the file name carries a patient id (an ``.npz#split/index`` entry never does:
    index 12 of train and index 12 of test are not one patient)."""
    return "#" not in path and patient_id(path) != Path(path).stem


def evaluation_sets(run: RunRecord) -> dict[str, str]:
    """The run's evaluation sets and their roles: the internal test first, then the external
    sets in the order metrics.json lists them."""
    sets = {TEST: "test"}
    sets.update({name: scores.role for name, scores in run.scores.external.items()})
    return sets


def scored_set(run: RunRecord, name: str = TEST) -> ScoredSet:
    """``run``'s predictions on the evaluation set ``name``, at its threshold: the run's own,
    or the one recorded for an external set that chose its own."""
    classes = run.classes
    positive = positive_index(classes)
    threshold = run.threshold if len(classes) == 2 else None
    role = "test"
    split = TEST
    if name != TEST:
        external = run.scores.external.get(name)
        if external is None:
            raise CxrlabError(f"run {run.run_id} has no external set {name!r}")
        role, split = external.role, EXTERNAL_PREFIX + name
        if external.threshold is not None and len(classes) == 2:
            threshold = external.threshold
    paths, labels, probs = run.prediction_arrays(split)
    return ScoredSet(name, role, paths, labels, probs, decide(probs, threshold, positive), classes, positive, threshold)


def aligned(a: ScoredSet, b: ScoredSet, id_a: str, id_b: str) -> np.ndarray:
    """Positions in ``b`` of ``a``'s images, so that the two line up image by image; refuses
    sets of different images or labels."""
    where = {path: i for i, path in enumerate(b.paths)}
    if len(a.paths) != len(b.paths) or len(where) != len(b.paths) or set(where) != set(a.paths):
        common = len(set(a.paths) & set(where))
        raise CxrlabError(
            f"runs {id_a} and {id_b} were scored on different {describe(a.name)} images ({len(a.paths)} and "
            f"{len(b.paths)}, {common} in common): compare runs of the same data and split seed"
        )
    order = np.array([where[p] for p in a.paths], dtype=np.int64)
    if [a.classes[i] for i in a.labels] != [b.classes[i] for i in b.labels[order]]:
        raise CxrlabError(
            f"runs {id_a} and {id_b} label the same {describe(a.name)} images differently: "
            f"compare runs of the same data and --labels"
        )
    return order


def describe(name: str) -> str:
    return "test" if name == TEST else f"external set {name}"


def confident_mistakes(scored: ScoredSet, k: int = 8) -> np.ndarray:
    """Indices of the ``k`` wrong predictions the run was surest of (highest probability of
    the class it predicted)."""
    wrong = np.flatnonzero(~scored.correct)
    confidence = scored.probs[wrong, scored.predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:k]


def confident_hits(scored: ScoredSet, k: int = 4) -> np.ndarray:
    """Indices of ``k`` right predictions the run was surest of, disease class first."""
    right = np.flatnonzero(scored.correct)
    confidence = scored.probs[right, scored.predicted[right]]
    disease_first = (scored.predicted[right] != scored.positive).astype(int) if scored.binary else np.zeros(len(right))
    return right[np.lexsort((-confidence, disease_first))][:k]
