"""MedMNIST ``.npz`` sources: a file of ``<split>_images`` and ``<split>_labels``, or the
``pneumoniamnist[:SIZE]`` download spec fetched with the ``medmnist`` package.

The arrays are checked before anything is decoded: images ``(N, H, W)``, ``(N, H, W, 1)`` or
RGB, with pixels; labels ``0..K-1`` with every class in train and no class in val or test
that train lacks. The files carry no patient ids, so every image is its own patient.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from cxrlab.core.errors import CxrlabError
from cxrlab.core.paths import cache_root
from cxrlab.data.listing import SPLITS, SourceListing, first_line

MEDMNIST_SIZES = (28, 64, 128, 224)
# MedMNIST's PneumoniaMNIST label ids, in order.
PNEUMONIAMNIST_CLASSES = ["NORMAL", "PNEUMONIA"]
# The download spec, exactly: "pneumoniamnist" or "pneumoniamnist:SIZE".
DOWNLOAD_SPEC = re.compile(r"pneumoniamnist(:[^/\\]*)?", re.IGNORECASE)


def list_npz(path: str) -> SourceListing:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CxrlabError(f"cannot read {path} as a .npz file ({first_line(exc)})") from exc
    if not hasattr(npz, "files"):  # a plain .npy array saved under a .npz name
        raise CxrlabError(
            f"{path} holds a single array, not a .npz archive: a MedMNIST .npz holds <split>_images and <split>_labels"
        )
    arrays: dict[str, np.ndarray] = {}
    listing = SourceListing(kind="npz", location=path, classes=[], files=[], labels=[], splits=[], arrays=arrays)
    with npz:
        keys = set(npz.files)
        if "train_images" not in keys or "train_labels" not in keys:
            raise CxrlabError(
                f"{path} lacks train_images or train_labels: a MedMNIST .npz holds <split>_images and <split>_labels"
            )
        for split in SPLITS:
            image_key, label_key = f"{split}_images", f"{split}_labels"
            if image_key not in keys and label_key not in keys:
                continue
            if image_key not in keys or label_key not in keys:
                raise CxrlabError(f"{path} has {image_key if image_key in keys else label_key} without its partner key")
            images, split_labels = _npz_split(npz, path, image_key, label_key)
            arrays[split] = images
            listing.files += [f"{path}#{split}/{i}" for i in range(len(images))]
            listing.labels += [int(v) for v in split_labels]
            listing.splits += [split] * len(images)
    n_classes = _npz_classes(path, listing)
    is_pneumonia = "pneumoniamnist" in Path(path).name.lower() and n_classes == 2
    listing.classes = PNEUMONIAMNIST_CLASSES if is_pneumonia else [f"class_{i}" for i in range(n_classes)]
    listing.notes.append(
        "a MedMNIST .npz carries no patient ids: each image counts as its own patient "
        "(splits are carved by image, and train#12, val#12 and test#12 are three patients)"
    )
    return listing


def _npz_split(npz, path: str, image_key: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One split's images ``(N, H, W)`` or ``(N, H, W, 3|4)`` and labels ``(N,)``, checked."""
    try:
        images, labels = npz[image_key], np.asarray(npz[label_key]).reshape(-1)
    except Exception as exc:
        raise CxrlabError(
            f"cannot read {image_key}/{label_key} of {path} ({first_line(exc)}): "
            "a MedMNIST .npz holds plain numeric arrays"
        ) from exc
    if images.dtype.kind not in "uif" or labels.dtype.kind not in "ui":
        raise CxrlabError(
            f"{path}: {image_key} must hold numbers and {label_key} integers (got {images.dtype} and {labels.dtype})"
        )
    if labels.size and labels.min() < 0:
        raise CxrlabError(
            f"{path}: {label_key} holds a negative label ({labels.min()}): labels are class indices 0, 1, ..."
        )
    if len(images) != len(labels):
        raise CxrlabError(f"{path}: {image_key} holds {len(images)} images but {label_key} holds {len(labels)} labels")
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]  # (N, H, W, 1): one channel, stored with its axis
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (3, 4)):
        raise CxrlabError(
            f"{path}: {image_key} has shape {images.shape}, expected (N, H, W), (N, H, W, 1) or (N, H, W, 3)"
        )
    if images.shape[1] < 1 or images.shape[2] < 1:
        raise CxrlabError(f"{path}: {image_key} has shape {images.shape}: its images hold no pixels")
    if images.dtype.kind == "f" and images.size and not np.isfinite(images).all():
        raise CxrlabError(f"{path}: {image_key} holds NaN or infinite pixels")
    return images, labels


def _npz_classes(path: str, listing: SourceListing) -> int:
    """The number of classes: train's labels must be 0..K-1, each present; val and test may
    not hold a label train never saw."""
    by_split = {s: {lab for lab, sp in zip(listing.labels, listing.splits) if sp == s} for s in SPLITS}
    train = by_split["train"]
    if not train:
        raise CxrlabError(f"{path}: train_images holds no images")
    n_classes = max(train) + 1
    absent = sorted(set(range(n_classes)) - train)
    if absent:
        raise CxrlabError(
            f"{path}: train_labels holds {sorted(train)}, not 0..{n_classes - 1} "
            f"(no image of class {absent[0]}): labels must be class indices 0..K-1, each with train images"
        )
    if n_classes < 2:
        raise CxrlabError(f"{path}: train_labels holds one class (0): a classifier needs at least two")
    for split in ("val", "test"):
        unseen = sorted(by_split[split] - train)
        if unseen:
            raise CxrlabError(
                f"{path}: {split}_labels holds class {unseen[0]}, which train_labels never does: "
                "a model cannot learn a class it never sees"
            )
    return n_classes


def fetch_pneumoniamnist(spec: str, cache_dir: str | None) -> Path:
    _, _, size_text = spec.partition(":")
    size = int(size_text) if size_text.isdigit() else 28 if not size_text else -1
    if size not in MEDMNIST_SIZES:
        raise CxrlabError(
            f"unknown {spec}: use pneumoniamnist or pneumoniamnist:SIZE with SIZE one of 28, 64, 128, 224"
        )
    root = cache_root(cache_dir) / "medmnist"
    file_name = "pneumoniamnist.npz" if size == 28 else f"pneumoniamnist_{size}.npz"
    target = root / file_name
    if target.exists():
        return target
    hint = f"download {file_name} from MedMNIST (zenodo.org/records/10519652) and pass --data /path/to/{file_name}"
    try:
        import medmnist
    except ImportError as exc:
        raise CxrlabError(f"{spec} needs the medmnist package (pip install 'cxrlab[medmnist]'), or {hint}") from exc
    root.mkdir(parents=True, exist_ok=True)
    try:
        medmnist.PneumoniaMNIST(split="train", download=True, size=size, root=str(root))
    except Exception as exc:
        raise CxrlabError(f"cannot download {spec} (offline?): {hint}") from exc
    if not target.exists():
        raise CxrlabError(f"medmnist did not leave {target}: {hint}")
    return target


def array_digests(listing: SourceListing) -> list[str]:
    """SHA-1 of each image's array bytes, in listing order: byte-identical images of a .npz
    are found as those of image files are."""
    assert listing.arrays is not None
    return [
        hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
        for split in SPLITS
        if split in listing.arrays
        for image in listing.arrays[split]
    ]
