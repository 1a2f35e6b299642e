"""Scoring a finished run on other data, and predicting single images, through the one
run loader.

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

from cxrlab.core.decision import positive_index
from cxrlab.core.errors import BadImageError, CxrlabError
from cxrlab.core.summary import classification_report
from cxrlab.core.text import slug
from cxrlab.data.dataset import load_dataset
from cxrlab.data.images import decode_file, is_image_name
from cxrlab.training.predict import predict_logits, softmax
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
) -> dict:
    """Score ``run``'s selected checkpoint on ``data``'s test split (or on every image of a plain
    folder of class folders) at the run's own threshold; writes ``eval-<data>.json`` and
    ``eval-<data>.csv`` into the run directory and returns the metrics. ``on_bad_image``
    ("error" or "skip"; default: the run's) decides what an undecodable image does."""
    check_tta(tta)
    run = run if isinstance(run, RunRecord) else load_run(run)
    config = run.config
    dataset = load_dataset(
        data,
        config.image_size,
        split_seed=config.split_seed,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        labels=config.labels,
        on_bad_image=on_bad_image or config.on_bad_image,
        on_duplicate_label="keep",
        folder_is_test=True,
        cache_dir=cache_dir or config.cache_dir,
        show_progress=show_progress,
    )
    classes = run.classes
    if [c.upper() for c in dataset.classes] != [c.upper() for c in classes]:
        missing = [c for c in dataset.classes if c.upper() not in {k.upper() for k in classes}]
        if missing:
            raise CxrlabError(
                f"{data} has class {missing[0]}, which run {run.run_id} never learned ({', '.join(classes)})"
            )
    remap = np.array([[c.upper() for c in classes].index(c.upper()) for c in dataset.classes], dtype=np.int64)
    indices = dataset.indices("test")
    if len(indices) == 0:
        raise CxrlabError(f"{data} has no test images to score")
    torch_device = resolve_device(device)
    model = run.load_model().to(torch_device)
    tta = config.tta if tta is None else tta
    probs = softmax(
        predict_logits(
            model,
            dataset.images,
            indices,
            torch_device,
            batch_size=config.eval_batch_size,
            tta=tta,
            seed=config.seed,
        ).astype(np.float64)
    )
    labels = remap[dataset.labels[indices]]
    positive = positive_index(classes)
    threshold = run.threshold if len(classes) == 2 else None
    report = classification_report(labels, probs, classes, threshold, positive)
    at_half = classification_report(labels, probs, classes, 0.5, positive) if len(classes) == 2 else None
    result = {
        "data": str(data),
        "run": run.run_id,
        "tta": tta,
        "test_loss": report.pop("loss"),
        "test_accuracy": report.pop("accuracy"),
        **report,
        "test_at_threshold_0.5": {k: at_half[k] for k in ("accuracy", "sensitivity", "specificity")}
        if at_half
        else None,
        "n_test": len(indices),
        "skipped_images": len(dataset.skipped),
        "predictions_file": f"{evaluation_name(data)}.csv",
    }
    seen = seen_images(run)
    seen_in = [seen.split_of(dataset.paths[i], dataset.digests[i]) for i in indices]
    result["overlap"] = overlap_summary(seen_in, seen)
    if result["overlap"]["images"]:
        rest = np.array([s is None for s in seen_in])
        result["overlap"]["without_overlap"] = (
            {
                key: value
                for key, value in classification_report(labels[rest], probs[rest], classes, threshold, positive).items()
                if key in ("n", "accuracy", "balanced_accuracy", "sensitivity", "specificity", "roc_auc", "loss")
            }
            if rest.any()
            else None
        )
    name = evaluation_name(data)
    writer = RunWriter(run.path)
    writer.metrics(result, name=f"{name}.json")
    writer.predictions(
        [dataset.paths[i] for i in indices], ["test"] * len(indices), labels, probs, classes, name=f"{name}.csv"
    )
    return result


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
    kept = []
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
    on_bad_image: str = "error",
) -> list[Prediction]:
    """The predicted class and class probabilities of each image (folders expanded); with
    ``on_bad_image="skip"`` an undecodable image is left out with a warning."""
    check_tta(tta)
    run = run if isinstance(run, RunRecord) else load_run(run)
    files, pixels = readable_images(expand_images(images), run.config.image_size, on_bad_image)
    torch_device = resolve_device(device)
    model = run.load_model().to(torch_device)
    tta = run.config.tta if tta is None else tta
    probs = softmax(
        predict_logits(model, pixels, np.arange(len(files)), torch_device, tta=tta, seed=run.config.seed).astype(
            np.float64
        )
    )
    classes = run.classes
    binary = len(classes) == 2
    seen = seen_images(run)
    return [
        Prediction(
            path,
            classes[int(k)],
            {c: float(p) for c, p in zip(classes, row)},
            threshold=run.threshold if binary else None,
            positive_class=classes[run.positive] if binary else None,
            seen_in=seen.split_of(path, file_digest(path)),
        )
        for path, row, k in zip(files, probs, run.decide(probs))
    ]
