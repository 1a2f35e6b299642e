"""Finding the labelled images behind a ``--data`` argument.

Four kinds of source:

* a dataset root: ``train/``, optional ``val/`` and ``test/``, one folder per class in each
  (the layout of the public Kermany download);
* a single folder of class folders (every image is scored; used by evaluate and predict);
* a MedMNIST ``.npz`` file (``train_images``, ``train_labels``, ``val_…``, ``test_…``);
* ``pneumoniamnist`` or ``pneumoniamnist:SIZE``, fetched with the ``medmnist`` package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrlab.core.errors import CxrlabError
from cxrlab.core.paths import cache_root
from cxrlab.core.text import first_line
from cxrlab.data.images import IGNORED_NAMES, IMAGE_EXTENSIONS
from cxrlab.data.patients import kermany3_class

SPLITS = ("train", "val", "test")
LABEL_SCHEMES = ("folders", "kermany3")
MEDMNIST_SIZES = (28, 64, 128, 224)
# MedMNIST's PneumoniaMNIST label ids, in order.
PNEUMONIAMNIST_CLASSES = ["NORMAL", "PNEUMONIA"]


@dataclass
class SourceListing:
    """What a source holds before decoding: one entry per image."""

    kind: str  # "root", "folder" or "npz"
    location: str
    classes: list[str]
    files: list[str]  # file paths; for npz, "<file>#<split>/<index>"
    labels: list[int]
    splits: list[str | None]  # the split the layout puts an image in; None for a plain folder
    ignored: list[str] = field(default_factory=list)  # .DS_Store and the like
    notes: list[str] = field(default_factory=list)  # skipped symlink loops, unmatched classes
    arrays: dict[str, np.ndarray] | None = None  # npz: images per split

    def __len__(self) -> int:
        return len(self.files)


def list_source(spec: str, labels: str = "folders", cache_dir: str | None = None) -> SourceListing:
    """List the images of ``spec`` (a path or ``pneumoniamnist[:SIZE]``) with their labels."""
    if labels not in LABEL_SCHEMES:
        raise CxrlabError(f"unknown --labels {labels!r}: use one of {', '.join(LABEL_SCHEMES)}")
    spec = str(spec)
    if spec.lower().startswith("pneumoniamnist"):
        return _list_npz(str(_fetch_pneumoniamnist(spec, cache_dir)))
    path = Path(spec).expanduser()
    if not path.exists():
        raise CxrlabError(
            f"data path {spec} does not exist: pass a dataset root, a folder of class folders or a .npz file"
        )
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise CxrlabError(
                f"data file {spec} is not a .npz file: pass a dataset root, a folder of class folders or a MedMNIST .npz"
            )
        if labels != "folders":
            raise CxrlabError("--labels kermany3 needs the Kermany folder layout, not a .npz file")
        return _list_npz(str(path))
    children = {c.name.lower(): c for c in _subdirs(path)}
    if "train" in children:
        return _list_root(path, children, labels)
    return _list_folder(path, labels)


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir() and not _ignored_folder(p.name))
    except OSError as exc:
        raise CxrlabError(f"cannot list folder {path}: {exc.strerror}") from exc


def _list_root(root: Path, children: dict[str, Path], labels: str) -> SourceListing:
    listing = SourceListing(kind="root", location=str(root), classes=[], files=[], labels=[], splits=[])
    class_names: dict[str, str] = {}  # upper-case key -> spelling first seen (train's)
    per_split: dict[str, list[tuple[str, str]]] = {}
    for split in SPLITS:
        if split not in children:
            continue
        folder_entries = _class_folder_entries(children[split], listing)
        if split == "train":
            empty = [name for name, files in folder_entries.items() if not files]
            if empty:
                raise CxrlabError(
                    f"class folder {children[split] / empty[0]} has no images: add images or remove the folder"
                )
        for name in folder_entries:
            class_names.setdefault(name.upper(), name)
        per_split[split] = [(f, name) for name, files in folder_entries.items() for f in files]
    train_classes = {name.upper() for _, name in per_split.get("train", [])}
    for split, entries in per_split.items():
        unknown = sorted({name for _, name in entries if name.upper() not in train_classes})
        if unknown:
            raise CxrlabError(
                f"class folder {split}/{unknown[0]} has no counterpart in train/: a model cannot learn a class it never sees; rename or remove it"
            )
        missing = sorted(train_classes - {name.upper() for _, name in entries})
        if split != "train" and missing:
            listing.notes.append(f"{split}/ has no images of class {', '.join(class_names[m] for m in missing)}")
    _fill_labels(listing, per_split, {k: class_names[k] for k in sorted(train_classes)}, labels)
    if len(listing.classes) < 2:
        raise CxrlabError(
            f"train/ in {root} holds one class ({', '.join(listing.classes) or 'none'}): a classifier needs at least two class folders"
        )
    return listing


def _list_folder(path: Path, labels: str) -> SourceListing:
    listing = SourceListing(kind="folder", location=str(path), classes=[], files=[], labels=[], splits=[])
    entries = _class_folder_entries(path, listing)
    if not entries:
        loose = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
        hint = " (its images must sit in one folder per class)" if loose else ""
        raise CxrlabError(
            f"folder {path} holds no class folders{hint}: pass a dataset root with train/ or a folder of class folders"
        )
    names = {name.upper(): name for name in entries}
    split_entries = {None: [(f, name) for name, files in entries.items() for f in files]}
    _fill_labels(listing, split_entries, {k: names[k] for k in sorted(names)}, labels)
    if not listing.files:
        raise CxrlabError(f"folder {path} holds no images: expected .jpeg/.png files in one folder per class")
    return listing


def _fill_labels(listing: SourceListing, per_split: dict, class_by_key: dict[str, str], labels: str) -> None:
    if labels == "kermany3":
        listing.classes = ["NORMAL", "BACTERIA", "VIRUS"]
    else:
        listing.classes = list(class_by_key.values())
    index = {name: i for i, name in enumerate(listing.classes)}
    for split, entries in per_split.items():
        for file, folder_name in sorted(entries):
            name = class_by_key[folder_name.upper()]
            if labels == "kermany3":
                try:
                    name = kermany3_class(file, name)
                except ValueError as exc:
                    raise CxrlabError(f"--labels kermany3: {exc} ({file})") from exc
            listing.files.append(file)
            listing.labels.append(index[name])
            listing.splits.append(split)


def _class_folder_entries(folder: Path, listing: SourceListing) -> dict[str, list[str]]:
    """Image files under each class folder of ``folder`` (searched recursively, links followed once)."""
    entries: dict[str, list[str]] = {}
    seen_keys: dict[str, str] = {}
    for class_dir in _subdirs(folder):
        key = class_dir.name.upper()
        if key in seen_keys:
            raise CxrlabError(
                f"class folders {seen_keys[key]} and {class_dir.name} in {folder} differ only in letter case: merge them"
            )
        seen_keys[key] = class_dir.name
        entries[class_dir.name] = _image_files(class_dir, listing)
    return entries


def _ignored_folder(name: str) -> bool:
    # Hidden folders and the __MACOSX folder that macOS archives carry are never classes.
    return name.startswith(".") or name.lower() == "__macosx"


def _image_files(class_dir: Path, listing: SourceListing) -> list[str]:
    files: list[str] = []
    visited: set[str] = set()
    class_real = os.path.realpath(class_dir)
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        real = os.path.realpath(dirpath)
        # A link back to this folder or above it would list it again, or list the other
        # classes' images under this class: a loop, never followed.
        loops_back = dirpath != str(class_dir) and (real == class_real or class_real.startswith(real + os.sep))
        if real in visited or loops_back:
            listing.notes.append(f"skipped {dirpath}: a symbolic link loop")
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not _ignored_folder(d))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.lower() in IGNORED_NAMES or name.startswith("._") or name.startswith("."):
                listing.ignored.append(full)
            elif Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                files.append(full)
            else:
                listing.ignored.append(full)
    return files


def _list_npz(path: str) -> SourceListing:
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise CxrlabError(f"cannot read {path} as a .npz file ({first_line(exc)})") from exc
    if not hasattr(npz, "files"):  # a plain .npy array saved under a .npz name
        raise CxrlabError(
            f"{path} holds a single array, not a .npz archive: a MedMNIST .npz holds <split>_images and <split>_labels"
        )
    listing = SourceListing(kind="npz", location=path, classes=[], files=[], labels=[], splits=[], arrays={})
    with npz:
        keys = set(npz.files)
        if "train_images" not in keys or "train_labels" not in keys:
            raise CxrlabError(
                f"{path} lacks train_images or train_labels: a MedMNIST .npz holds <split>_images and <split>_labels"
            )
        max_label = 0
        for split in SPLITS:
            image_key, label_key = f"{split}_images", f"{split}_labels"
            if image_key not in keys and label_key not in keys:
                continue
            if image_key not in keys or label_key not in keys:
                raise CxrlabError(f"{path} has {image_key if image_key in keys else label_key} without its partner key")
            try:
                images, split_labels = npz[image_key], np.asarray(npz[label_key]).reshape(-1)
            except Exception as exc:
                raise CxrlabError(
                    f"cannot read {image_key}/{label_key} of {path} ({first_line(exc)}): "
                    "a MedMNIST .npz holds plain numeric arrays"
                ) from exc
            if images.dtype.kind not in "uif" or split_labels.dtype.kind not in "ui":
                raise CxrlabError(
                    f"{path}: {image_key} must hold numbers and {label_key} integers "
                    f"(got {images.dtype} and {split_labels.dtype})"
                )
            if split_labels.size and split_labels.min() < 0:
                raise CxrlabError(
                    f"{path}: {label_key} holds a negative label ({split_labels.min()}): labels are class indices 0, 1, ..."
                )
            if len(images) != len(split_labels):
                raise CxrlabError(
                    f"{path}: {image_key} holds {len(images)} images but {label_key} holds {len(split_labels)} labels"
                )
            if images.ndim not in (3, 4):
                raise CxrlabError(f"{path}: {image_key} has shape {images.shape}, expected (N, H, W) or (N, H, W, C)")
            listing.arrays[split] = images
            listing.files += [f"{path}#{split}/{i}" for i in range(len(images))]
            listing.labels += [int(v) for v in split_labels]
            listing.splits += [split] * len(images)
            max_label = max(max_label, int(split_labels.max(initial=0)))
    n_classes = max(max_label + 1, 2)
    is_pneumonia = "pneumoniamnist" in Path(path).name.lower() and n_classes == 2
    listing.classes = PNEUMONIAMNIST_CLASSES if is_pneumonia else [f"class_{i}" for i in range(n_classes)]
    return listing


def _fetch_pneumoniamnist(spec: str, cache_dir: str | None) -> Path:
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
