"""One labelled data set, decoded, with every image assigned to train, val or test.

``load_dataset`` is the one entry point the layers above use: it lists the source, gets
the pixels from the decoded-image cache and settles the splits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cxrlab.core.errors import BadImageError, CxrlabError
from cxrlab.core.paths import cache_root
from cxrlab.data.cache import DecodedImages, decoded_images
from cxrlab.data.listing import SourceListing
from cxrlab.data.medmnist import array_digests
from cxrlab.data.patients import patient_ids
from cxrlab.data.sources import SPLITS, list_source
from cxrlab.data.splits import duplicate_groups, grouped_holdout, linked_groups

# The public download's val/ holds 16 images; a split this small cannot select a model.
MIN_VAL_FRACTION = 0.05
BAD_IMAGE_POLICIES = ("error", "skip")
DUPLICATE_LABEL_POLICIES = ("error", "keep")


@dataclass
class Dataset:
    location: str
    kind: str
    classes: list[str]
    paths: list[str]
    labels: np.ndarray  # (N,) int64
    splits: np.ndarray  # (N,) "train" / "val" / "test"
    patients: list[str]
    digests: list[str]
    images: np.ndarray  # (N, size, size) uint8, memory-mapped
    image_size: int
    fingerprint: str  # the decoded-image cache key: what the pixels depend on
    split_notes: list[str] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"path", "reason"} per undecodable image
    ignored: list[str] = field(default_factory=list)
    decoded: int = 0  # images this load had to decode (0: all came from the cache)

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.splits == split)

    def count(self, split: str) -> int:
        return int((self.splits == split).sum())

    def cross_split_duplicates(self) -> list[list[int]]:
        """Groups of byte-identical images that sit in more than one split."""
        return [g for g in duplicate_groups(self.digests) if len({self.splits[i] for i in g}) > 1]

    @property
    def split_fingerprint(self) -> str:
        """What the run's splits are: every image's path, content and split, in order."""
        digest = hashlib.sha256(self.fingerprint.encode())
        for path, sha1, split in zip(self.paths, self.digests, self.splits):
            digest.update(f"{path}|{sha1}|{split}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()[:16]

    def split_key(self, split: str) -> str:
        """The exact images of ``split``, in order: paths and contents (a cache key part)."""
        digest = hashlib.sha256(self.fingerprint.encode())
        for i in self.indices(split):
            digest.update(f"{self.paths[i]}|{self.digests[i]}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def overlap(self, split: str = "test") -> dict:
        """What ``split`` shares with the images that trained and validated: patients (and
        their images in ``split``) and byte-identical images. Zero for a split carved by
        patient; a given ``test/`` folder can share either, and its scores then overstate."""
        held = self.indices(split)
        seen = np.flatnonzero(np.isin(self.splits, [s for s in ("train", "val") if s != split]))
        seen_patients = {self.patients[i] for i in seen}
        seen_digests = {self.digests[i] for i in seen if self.digests[i]}
        shared = sorted({self.patients[i] for i in held} & seen_patients)
        identical = [self.paths[i] for i in held if self.digests[i] and self.digests[i] in seen_digests]
        return {
            "patients": len(shared),
            "images_of_shared_patients": int(sum(self.patients[i] in seen_patients for i in held)),
            "identical_images": len(identical),
            "examples": (shared[:3] + identical[:3]),
        }


def load_dataset(
    spec: str,
    image_size: int = 224,
    *,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.15,
    labels: str = "folders",
    on_bad_image: str = "error",
    on_duplicate_label: str = "error",
    all_test: bool = False,
    folder_is_test: bool = False,
    cache_dir: str | None = None,
    show_progress: bool = True,
) -> Dataset:
    """Load ``spec`` decoded at ``image_size``.

    Splits: a root's ``train/``, ``val/`` and ``test/`` folders (or a .npz's splits) are
    kept; a missing or tiny validation split, and a missing test split, are carved out of
    train by patient. ``all_test`` puts every image in the test split; ``folder_is_test`` does
    so for a plain folder of class folders only (evaluate scores a root's test split, or all
    of a plain folder). Byte-identical images under different labels stop the load unless
    ``on_duplicate_label`` is "keep".
    """
    _check_load_options(image_size, split_seed, on_bad_image, on_duplicate_label)
    listing = list_source(spec, labels=labels, cache_dir=cache_dir)
    decoded = decoded_images(listing, image_size, cache_dir=cache_dir, show_progress=show_progress)
    keep, skipped = _readable(spec, listing, decoded, on_bad_image)
    kept = _kept_images(listing, decoded, keep)
    patients = patient_ids(listing.kind, kept.files)

    notes = list(listing.notes)
    _settle_label_conflicts(kept, listing.classes, on_duplicate_label, notes)
    all_test = all_test or (folder_is_test and listing.kind == "folder")
    carving = Carving(val_fraction, test_fraction, split_seed, cache_root(cache_dir) / "splits")
    splits = _settled_splits(listing.kind, kept, patients, all_test, carving, notes)
    dataset = Dataset(
        location=listing.location,
        kind=listing.kind,
        classes=listing.classes,
        paths=kept.files,
        labels=kept.labels,
        splits=splits.astype(str),
        patients=patients,
        digests=kept.digests,
        images=kept.pixels,
        image_size=image_size,
        fingerprint=decoded.key,
        split_notes=notes,
        skipped=skipped,
        ignored=listing.ignored,
        decoded=decoded.decoded,
    )
    if not all_test:
        _note_cross_split_duplicates(dataset)
    return dataset


class KeptImages(NamedTuple):
    """The readable images of a listing, in listing order, with what is known of each."""

    files: list[str]
    digests: list[str]
    labels: np.ndarray  # (N,) int64
    layout_splits: list[str | None]  # the split the source's layout puts each image in
    pixels: np.ndarray  # (N, size, size) uint8


def _check_load_options(image_size: int, split_seed: int, on_bad_image: str, on_duplicate_label: str) -> None:
    """Refuse unknown policies, a split seed out of range and an image size too small to train on."""
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise CxrlabError(f"unknown --on-bad-image {on_bad_image!r}: use error or skip")
    check_split_seed(split_seed)
    if on_duplicate_label not in DUPLICATE_LABEL_POLICIES:
        raise CxrlabError(f"unknown --on-duplicate-label {on_duplicate_label!r}: use error or keep")
    if image_size < 16:
        raise CxrlabError(f"--image-size {image_size} is too small: use 16 or more")


def _readable(
    spec: str, listing: SourceListing, decoded: DecodedImages, on_bad_image: str
) -> tuple[np.ndarray, list[dict]]:
    """Which images decoded (a mask over the listing) and a {"path", "reason"} per one that did
    not; the first undecodable image stops the load unless ``on_bad_image`` is "skip"."""
    if decoded.bad and on_bad_image == "error":
        index = min(decoded.bad)
        raise BadImageError(listing.files[index], decoded.bad[index])
    keep = np.array([i not in decoded.bad for i in range(len(listing))], dtype=bool)
    skipped = [{"path": listing.files[i], "reason": decoded.bad[i]} for i in sorted(decoded.bad)]
    if not keep.any():
        raise CxrlabError(f"no readable images in {spec}")
    return keep, skipped


def _kept_images(listing: SourceListing, decoded: DecodedImages, keep: np.ndarray) -> KeptImages:
    """The images ``keep`` marks, each with its file, content digest, label and layout split."""
    keep_idx = np.flatnonzero(keep)
    # All kept: the memory-mapped pixels as they are, not a copy in memory.
    pixels = decoded.pixels if keep.all() else decoded.pixels[keep_idx]
    all_digests = array_digests(listing) if listing.kind == "npz" else decoded.digests
    return KeptImages(
        files=[listing.files[i] for i in keep_idx],
        digests=[all_digests[i] for i in keep_idx],
        labels=np.asarray(listing.labels, dtype=np.int64)[keep_idx],
        layout_splits=[listing.splits[i] for i in keep_idx],
        pixels=pixels,
    )


class Carving(NamedTuple):
    """How missing splits are carved from train, and where carved masks are remembered."""

    val_fraction: float
    test_fraction: float
    seed: int
    memo_dir: Path | None = None


def _settled_splits(
    kind: str, kept: KeptImages, patients: list[str], all_test: bool, carving: Carving, notes: list[str]
) -> np.ndarray:
    """Every kept image's split: all test, or the layout's splits (a plain folder has none)
    with a missing test and a missing or tiny val split carved from train by patient."""
    if all_test:
        return np.array(["test"] * len(kept.files), dtype=object)
    return carve_splits(
        kept.labels,
        patients,
        kept.digests,
        splits_from=kept.layout_splits if kind != "folder" else None,
        n=len(kept.files),
        carving=carving,
        notes=notes,
    )


def _settle_label_conflicts(kept: KeptImages, classes: list[str], on_duplicate_label: str, notes: list[str]) -> None:
    """Stop at byte-identical images under different labels, or note them when they are kept."""
    conflicts = label_conflicts(kept.files, kept.digests, kept.labels, classes)
    if conflicts and on_duplicate_label == "error":
        raise CxrlabError(
            f"{len(conflicts)} byte-identical images carry different labels, e.g. {conflicts[0]}: "
            "remove or relabel them, or pass --on-duplicate-label keep"
        )
    if conflicts:
        notes.append(f"kept {len(conflicts)} byte-identical images under different labels, e.g. {conflicts[0]}")


def _note_cross_split_duplicates(dataset: Dataset) -> None:
    """Add a split note per group of byte-identical images that the splits put apart."""
    for group in dataset.cross_split_duplicates():
        names = ", ".join(f"{dataset.paths[i]} ({dataset.splits[i]})" for i in group)
        dataset.split_notes.append(f"byte-identical images in different splits: {names}")


def check_split_seed(seed: int) -> None:
    if not 0 <= seed < 2**32:
        raise CxrlabError(f"--split-seed {seed}: a split seed is a whole number from 0 to {2**32 - 1}")


def label_conflicts(files: list[str], digests: list[str], labels: np.ndarray, classes: list[str]) -> list[str]:
    """Groups of byte-identical images whose labels differ, each as ``a (NORMAL) = b (PNEUMONIA)``."""
    return [
        " = ".join(f"{files[i]} ({classes[int(labels[i])]})" for i in group[:3])
        for group in duplicate_groups(digests)
        if len({int(labels[i]) for i in group}) > 1
    ]


def carve_splits(labels, patients, digests, splits_from, n, carving: Carving, notes) -> np.ndarray:
    val_fraction, test_fraction, seed, memo_dir = carving
    splits = np.array(splits_from if splits_from is not None else ["train"] * n, dtype=object)
    groups = linked_groups(patients, digests)
    pool = splits == "train"
    if not (splits == "test").any() and test_fraction > 0:
        held = grouped_holdout(labels[pool], groups[pool], test_fraction, seed, memo_dir)
        splits[np.flatnonzero(pool)[held]] = "test"
        notes.append(f"test split carved from train by patient: {int(held.sum())} images (seed {seed})")
        pool = splits == "train"
    n_val = int((splits == "val").sum())
    if n_val < MIN_VAL_FRACTION * pool.sum() and val_fraction > 0:
        if n_val:
            # A tiny val/ cannot select a model; fold it into train and carve a real one.
            splits[splits == "val"] = "train"
            notes.append(f"val/ held only {n_val} images (under {MIN_VAL_FRACTION:.0%} of train): merged into train")
            pool = splits == "train"
        # Carve val as a fraction of the whole, not of what is left after test.
        fraction = min(0.5, val_fraction / max(1e-9, pool.mean()))
        held = grouped_holdout(labels[pool], groups[pool], fraction, seed + 1, memo_dir)
        splits[np.flatnonzero(pool)[held]] = "val"
        notes.append(f"validation split carved from train by patient: {int(held.sum())} images (seed {seed})")
    for split in SPLITS:
        if split != "train" and (splits == split).any() and len(np.unique(labels[splits == split])) < 2:
            notes.append(f"{split} split holds one class only")
    return splits
