"""Finding the labelled images behind a ``--data`` argument.

Four kinds of source:

* a dataset root: ``train/``, optional ``val/`` and ``test/``, one folder per class in each
  (the layout of the public Kermany download);
* a single folder of class folders (every image is scored; used by evaluate and predict);
* a MedMNIST ``.npz`` file (``train_images``, ``train_labels``, ``val_…``, ``test_…``);
* ``pneumoniamnist`` or ``pneumoniamnist:SIZE``, fetched with the ``medmnist`` package
  (only when no file or folder of that name exists: a path always wins).

Every file is listed once, with one label: a file reached twice (a link from one class
folder into another, a class folder that links to another) is an error naming both places.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from cxrlab.core.errors import CxrlabError
from cxrlab.data.images import IGNORED_NAMES, IMAGE_EXTENSIONS
from cxrlab.data.listing import SPLITS, SourceListing, printable
from cxrlab.data.medmnist import DOWNLOAD_SPEC, fetch_pneumoniamnist, list_npz
from cxrlab.data.patients import kermany3_class

__all__ = ["LABEL_SCHEMES", "SPLITS", "SourceListing", "list_source", "printable"]

LABEL_SCHEMES = ("folders", "kermany3")


def list_source(spec: str, labels: str = "folders", cache_dir: str | None = None) -> SourceListing:
    """List the images of ``spec`` (a path or ``pneumoniamnist[:SIZE]``) with their labels."""
    if labels not in LABEL_SCHEMES:
        raise CxrlabError(f"unknown --labels {labels!r}: use one of {', '.join(LABEL_SCHEMES)}")
    spec = str(spec)
    path = Path(spec).expanduser()
    if not path.exists() and DOWNLOAD_SPEC.fullmatch(spec):
        return list_npz(str(fetch_pneumoniamnist(spec, cache_dir)))
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
        return list_npz(str(path))
    children = {c.name.lower(): c for c in _subdirs(path)}
    listing = _list_root(path, children, labels) if "train" in children else _list_folder(path, labels)
    _refuse_files_reached_twice(listing)
    return listing


def _place(listing: SourceListing, k: int) -> str:
    """Image ``k`` of ``listing`` as its path, split and class."""
    split = listing.splits[k]
    return f"{printable(listing.files[k])} ({split + ', ' if split else ''}{listing.classes[listing.labels[k]]})"


def _refuse_files_reached_twice(listing: SourceListing) -> None:
    """One file, one place, one label: links that reach a file a second time are an error."""
    first: dict[str, int] = {}
    for i, real in enumerate(real_paths(listing.files)):
        if real not in first:
            first[real] = i
            continue
        j = first[real]
        places = [_place(listing, k) for k in (j, i)]
        raise CxrlabError(
            f"one file is reached twice: {places[0]} and {places[1]} are both {printable(real)}; "
            "a symbolic link gives a file a second place (and maybe a second label): remove the link"
        )


def real_paths(files: list[str]) -> Iterator[str]:
    """``os.path.realpath`` of each file, each folder resolved once: a file that is not itself
    a link is its folder's real path plus its name. (realpath calls lstat on every part of
    every path: a second per load of the 5216 Kermany images.)"""
    real_folders: dict[str, str] = {}
    for file in files:
        if os.path.islink(file):
            yield os.path.realpath(file)
            continue
        folder, name = os.path.split(file)
        if folder not in real_folders:
            real_folders[folder] = os.path.realpath(folder)
        yield os.path.join(real_folders[folder], name)


def _subdirs(path: Path) -> list[Path]:
    try:
        found = sorted(p for p in path.iterdir() if p.is_dir() and not _ignored_folder(p.name))
    except OSError as exc:
        raise CxrlabError(f"cannot list folder {printable(path)}: {exc.strerror}") from exc
    for folder in found:
        _require_utf8(folder)
    return found


def _require_utf8(path: Path | str) -> None:
    """Names are written to split.csv, config.yaml and reports as UTF-8: a name in another
    encoding is refused here, with its bytes shown, rather than failing half way through a run."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise CxrlabError(
            f"the name {printable(path)} is not UTF-8 (\\xNN are its raw bytes): rename it, e.g. convmv -f latin1 -t utf8"
        ) from None


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
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True, onerror=_unlistable):
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
            _require_utf8(full)
            if name.lower() in IGNORED_NAMES or name.startswith("._") or name.startswith("."):
                listing.ignored.append(full)
            elif Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                files.append(full)
            else:
                listing.ignored.append(full)
    return files


def _unlistable(exc: OSError) -> None:
    # os.walk skips a folder it cannot list unless told; silently skipped, a class would
    # look empty ("has no images") when it is unreadable.
    raise CxrlabError(f"cannot list folder {printable(exc.filename)}: {exc.strerror}") from exc
