"""Scoring a finished run on other data, and predicting single images, through the one
run loader."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrlab.core.decision import positive_index
from cxrlab.core.errors import BadImageError, CxrlabError
from cxrlab.core.summary import classification_report
from cxrlab.data.dataset import load_dataset
from cxrlab.data.images import decode_file, is_image_name
from cxrlab.training.predict import predict_logits, softmax
from cxrlab.training.records import RunRecord, load_run
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
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in stem)[:40]
    return f"eval-{safe}-{digest}"


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
    return [
        Prediction(path, classes[int(k)], {c: float(p) for c, p in zip(classes, row)})
        for path, row, k in zip(files, probs, run.decide(probs))
    ]
