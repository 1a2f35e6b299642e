"""Scoring a finished run on other data, and predicting single images, through the one
run loader; plain, or adapted to a target site (``cxrlab.evaluate.adapt``).

Both look for the run's own training and validation images among what they are given (by
real path, and by content hash against the run's split.csv): a score on images the run
learned from, or chose its epoch and threshold on, is no test. The result says how many,
and the metrics on the rest.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cxrlab.core.decision import positive_index
from cxrlab.core.errors import BadImageError, CxrlabError
from cxrlab.core.summary import classification_report
from cxrlab.core.text import slug
from cxrlab.data.images import decode_file, is_image_name
from cxrlab.evaluate.adapt import adapt_model
from cxrlab.training.adaptation import AdaptationRecord, adapted_probabilities, apply_bn_buffers, load_adaptation
from cxrlab.training.external import load_scoring_set
from cxrlab.training.predict import predict_logits
from cxrlab.training.records import RunRecord, load_run, read_csv
from cxrlab.training.rundir import RunWriter
from cxrlab.training.runtime import resolve_device

logger = logging.getLogger(__name__)
TTA_RANGE = (0, 64)  # as TrainConfig.tta: a negative count would average nothing into NaN


def check_tta(tta: int | None) -> None:
    if tta is not None and not TTA_RANGE[0] <= tta <= TTA_RANGE[1]:
        raise CxrlabError(f"--tta {tta}: give {TTA_RANGE[0]} to {TTA_RANGE[1]} augmented views (0: none)")


def evaluation_name(data: str) -> str:
    """The file a run's scores on ``data`` are written to: readable, and unique per data."""
    stem = Path(str(data).rstrip("/")).name or "data"
    digest = hashlib.sha1(str(Path(str(data)).expanduser().resolve()).encode()).hexdigest()[:8]
    return f"eval-{slug(stem, 40)}-{digest}"


@dataclass
class SeenImages:
    """The images that trained or validated a run, by real path and by content (SHA-1)."""

    by_path: dict[str, str] = field(default_factory=dict)  # real path -> "train" | "val"
    by_digest: dict[str, str] = field(default_factory=dict)
    known: bool = True  # False: the run has no split.csv to compare with

    def split_of(self, path: str, digest: str) -> str | None:
        """``train``/``val`` when the image is one the run learned from or chose on, else None."""
        found = self.by_path.get(os.path.realpath(path)) if not _is_array_item(path) else self.by_path.get(path)
        return found or (self.by_digest.get(digest) if digest else None)


def _is_array_item(path: str) -> bool:
    return "#" in Path(path).name and ".npz#" in path


def seen_images(run: RunRecord) -> SeenImages:
    """What trained and validated ``run``, from its split.csv (content hashes where recorded)."""
    split_csv = run.path / "split.csv"
    if not split_csv.exists():
        return SeenImages(known=False)
    seen = SeenImages()
    for row in read_csv(split_csv):
        if row.get("split") not in ("train", "val"):
            continue
        path = row.get("path") or ""
        seen.by_path[path if _is_array_item(path) else os.path.realpath(path)] = row["split"]
        if row.get("sha1"):
            seen.by_digest[row["sha1"]] = row["split"]
    return seen


def overlap_summary(seen_in: list[str | None], seen: SeenImages) -> dict:
    """How many of the images trained or validated the run (JSON-ready)."""
    return {
        "checked": seen.known,
        "images": sum(s is not None for s in seen_in),
        "train": sum(s == "train" for s in seen_in),
        "val": sum(s == "val" for s in seen_in),
        "by": "real path and content hash" if seen.by_digest else "real path",
    }


def evaluate_run(
    run: RunRecord | str | Path,
    data: str,
    *,
    tta: int | None = None,
    device: str = "auto",
    cache_dir: str | None = None,
    on_bad_image: str | None = None,
    show_progress: bool = True,
    adapt: str | None = None,
    adapted: str | None = None,
) -> dict:
    """Score ``run``'s selected checkpoint on ``data``'s test split (or on every image of a plain
    folder of class folders) at the run's own threshold; writes ``eval-<data>.json`` and
    ``eval-<data>.csv`` into the run directory and returns the metrics. ``on_bad_image``
    ("error" or "skip"; default: the run's) decides what an undecodable image does.

    ``adapt`` (bn, prior or bn+prior) first adapts the model to the very images it scores,
    without their labels (transductive); ``adapted`` applies a variant recorded by ``cxrlab
    adapt``. Either way the result carries an ``adaptation`` record and goes to its own files
    (``eval-<data>-adapt-<method>``, ``eval-<data>-adapted-<name>``), apart from the plain
    model's."""
    check_tta(tta)
    run = run if isinstance(run, RunRecord) else load_run(run)
    config = run.config
    if adapt and adapted:
        raise CxrlabError("--adapt adapts on the data at hand, --adapted applies a recorded variant: use one")
    labelled = load_scoring_set(
        data, config, run.classes, cache_dir=cache_dir, on_bad_image=on_bad_image, show_progress=show_progress
    )
    dataset, indices, labels = labelled.dataset, labelled.indices, labelled.labels
    torch_device = resolve_device(device)
    model, record = _model_for(run, torch_device, adapted, adapt, dataset.images, indices, target=str(data))
    tta = config.tta if tta is None else tta
    logits = predict_logits(
        model, dataset.images, indices, torch_device, batch_size=config.eval_batch_size, tta=tta, seed=config.seed
    )
    probs = adapted_probabilities(logits, run.temperature, record)
    classes = run.classes
    positive = positive_index(classes)
    threshold = run.threshold if len(classes) == 2 else None
    result = {
        "data": str(data),
        "run": run.run_id,
        "tta": tta,
        "adaptation": record.model_dump(mode="json") if record is not None else None,
        **_test_scores(labels, probs, classes, threshold, positive),
        "n_test": len(indices),
        "skipped_images": len(dataset.skipped),
    }
    seen = seen_images(run)
    seen_in = [seen.split_of(dataset.paths[i], dataset.digests[i]) for i in indices]
    result["overlap"] = _overlap_with_run(seen_in, seen, labels, probs, classes, threshold, positive)
    name = _evaluation_file_stem(data, adapt, adapted)
    result["predictions_file"] = f"{name}.csv"
    _write_evaluation(run.path, name, result, [dataset.paths[i] for i in indices], labels, probs, classes)
    return result


def _test_scores(
    labels: np.ndarray, probs: np.ndarray, classes: list[str], threshold: float | None, positive: int
) -> dict:
    """The metrics at the run's threshold, loss and accuracy first under their ``test_`` names;
    for two classes also accuracy, sensitivity and specificity at 0.5, for comparison."""
    report = classification_report(labels, probs, classes, threshold, positive)
    at_half = classification_report(labels, probs, classes, 0.5, positive) if len(classes) == 2 else None
    return {
        "test_loss": report.pop("loss"),
        "test_accuracy": report.pop("accuracy"),
        **report,
        "test_at_threshold_0.5": {k: at_half[k] for k in ("accuracy", "sensitivity", "specificity")}
        if at_half
        else None,
    }


def _overlap_with_run(
    seen_in: list[str | None],
    seen: SeenImages,
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
    threshold: float | None,
    positive: int,
) -> dict:
    """How many scored images trained or validated the run and, when any did, the main metrics
    on the rest (None when none is left): the score a reader can take as a test."""
    overlap = overlap_summary(seen_in, seen)
    if overlap["images"]:
        rest = np.array([s is None for s in seen_in])
        overlap["without_overlap"] = (
            {
                key: value
                for key, value in classification_report(labels[rest], probs[rest], classes, threshold, positive).items()
                if key in ("n", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc", "loss")
            }
            if rest.any()
            else None
        )
    return overlap


def _evaluation_file_stem(data: str, adapt: str | None, adapted: str | None) -> str:
    """The name of the evaluation's files without suffix: an adapted model's scores go to files
    of their own, apart from the plain model's."""
    name = evaluation_name(data)
    if adapt:
        name += f"-adapt-{adapt.replace('+', '-')}"
    elif adapted:
        name += f"-adapted-{adapted}"
    return name


def _write_evaluation(
    run_dir: Path,
    name: str,
    result: dict,
    paths: list[str],
    labels: np.ndarray,
    probs: np.ndarray,
    classes: list[str],
) -> None:
    """``<name>.json`` (the metrics) and ``<name>.csv`` (a prediction per image) in the run directory."""
    writer = RunWriter(run_dir)
    writer.metrics(result, name=f"{name}.json")
    writer.predictions(paths, ["test"] * len(paths), labels, probs, classes, name=f"{name}.csv")


def _model_for(
    run: RunRecord,
    device: torch.device,
    adapted: str | None,
    adapt: str | None,
    images: np.ndarray,
    indices: np.ndarray,
    target: str,
) -> tuple[torch.nn.Module, AdaptationRecord | None]:
    """The run's model on ``device``: plain, with a recorded adaptation applied, or adapted now
    to ``images[indices]`` (the images it is about to score)."""
    model = run.load_model().to(device)
    if adapted:
        record, bn_state = load_adaptation(run, adapted)
        return apply_bn_buffers(model, bn_state), record
    if adapt:
        record, _ = adapt_model(run, model, images, indices, adapt, device, target=target, transductive=True)
        return model, record
    return model, None


@dataclass
class Prediction:
    path: str
    predicted: str
    probabilities: dict[str, float]
    # Two classes: the positive class is predicted when its probability reaches the threshold
    # the run chose on validation (not 0.5); None for more classes (the most probable wins).
    threshold: float | None = None
    positive_class: str | None = None
    seen_in: str | None = None  # "train" or "val" when the image trained or validated the run
    adaptation: str | None = None  # the adaptation behind these numbers (None: the plain model)


def expand_images(paths: list[str]) -> list[str]:
    """Image files named, and the image files under folders named, in a stable order."""
    files: list[str] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            files += sorted(str(p) for p in path.rglob("*") if p.is_file() and is_image_name(p.name))
        elif path.is_file():
            files.append(str(path))
        else:
            raise CxrlabError(f"image {item} does not exist")
    if not files:
        raise CxrlabError("no images found: name image files or folders that hold them")
    return files


def decode_images(files: list[str], size: int) -> np.ndarray:
    pixels = np.zeros((len(files), size, size), dtype=np.uint8)
    for i, path in enumerate(files):
        image, _, reason = decode_file(path, size)
        if image is None:
            raise BadImageError(path, reason)
        pixels[i] = image
    return pixels


def file_digest(path: str) -> str:
    """SHA-1 of a file's bytes, as split.csv records them ("" when it cannot be read)."""
    try:
        return hashlib.sha1(Path(path).read_bytes()).hexdigest()
    except OSError:
        return ""


def readable_images(files: list[str], size: int, on_bad_image: str = "error") -> tuple[list[str], np.ndarray]:
    """The files that decode and their pixels; an undecodable one stops (``"error"``) or is
    left out with a warning (``"skip"``)."""
    if on_bad_image not in ("error", "skip"):
        raise CxrlabError(f"unknown --on-bad-image {on_bad_image!r}: use error or skip")
    pixels = np.zeros((len(files), size, size), dtype=np.uint8)
    kept: list[str] = []
    for path in files:
        image, _, reason = decode_file(path, size)
        if image is None:
            if on_bad_image == "error":
                raise BadImageError(path, reason)
            logger.warning(f"skipped {path}: {reason}")
            continue
        pixels[len(kept)] = image
        kept.append(path)
    if not kept:
        raise CxrlabError("none of the images could be read")
    return kept, pixels[: len(kept)]


def predict_images(
    run: RunRecord | str | Path,
    images: list[str],
    *,
    tta: int | None = None,
    device: str = "auto",
    adapt: str | None = None,
    adapted: str | None = None,
    on_bad_image: str = "error",
) -> list[Prediction]:
    """The predicted class and class probabilities of each image (folders expanded); with
    ``on_bad_image="skip"`` an undecodable image is left out with a warning. ``adapt`` adapts
    to the images given first, ``adapted`` applies a recorded variant."""
    check_tta(tta)
    run = run if isinstance(run, RunRecord) else load_run(run)
    if adapt and adapted:
        raise CxrlabError("--adapt adapts on the images given, --adapted applies a recorded variant: use one")
    files, pixels = readable_images(expand_images(images), run.config.image_size, on_bad_image)
    torch_device = resolve_device(device)
    indices = np.arange(len(files))
    model, record = _model_for(run, torch_device, adapted, adapt, pixels, indices, target=", ".join(images))
    tta = run.config.tta if tta is None else tta
    logits = predict_logits(model, pixels, indices, torch_device, tta=tta, seed=run.config.seed)
    probs = adapted_probabilities(logits, run.temperature, record)
    classes = run.classes
    binary = len(classes) == 2
    seen = seen_images(run)
    label = None if record is None else (f"{record.method} on the {len(files)} images given" if adapt else adapted)
    return [
        Prediction(
            path,
            classes[int(k)],
            {c: float(p) for c, p in zip(classes, row)},
            threshold=run.threshold if binary else None,
            positive_class=classes[run.positive] if binary else None,
            seen_in=seen.split_of(path, file_digest(path)),
            adaptation=label,
        )
        for path, row, k in zip(files, probs, run.decide(probs))
    ]
