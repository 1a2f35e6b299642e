"""The data a study reads, checked before any run starts, and fingerprinted so that workers
on several machines can tell whether they read the same images.

A fingerprint covers what a listing holds (each image's path relative to the data folder,
its class, its split and its size in bytes), not where it lies: the same download at
another path on another machine gives the same fingerprint, another data set does not.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from cxrlab.core.errors import CxrlabError
from cxrlab.study.estimate import ImageCounts
from cxrlab.study.plan import StudyPlan
from cxrlab.training.config import TrainConfig


@dataclass
class Sources:
    """What ``check_sources`` found: fingerprints by plan key (``data``, ``external.NAME``)
    and the split sizes the runs will see."""

    fingerprints: dict[str, str] = field(default_factory=dict)
    counts: ImageCounts | None = None


def check_sources(plan: StudyPlan) -> Sources:
    """List the study's data and external sets: a missing folder fails now, not in every run."""
    from cxrlab.data.sources import list_source

    first = _first_config(plan)
    listing = list_source(plan.data, labels=first.labels, cache_dir=first.cache_dir)
    found = Sources({"data": fingerprint(listing)})
    external_images = 0
    for name, path in plan.external.items():
        try:
            external = list_source(path, labels=first.labels, cache_dir=first.cache_dir)
        except CxrlabError as exc:
            raise CxrlabError(f"{plan.source}: external.{name}: {exc} (or leave it out: --external {name}=)") from exc
        found.fingerprints[f"external.{name}"] = fingerprint(external)
        external_images += len(external)
    found.counts = ImageCounts.of_listing(listing, first, external=external_images)
    return found


def image_counts(plan: StudyPlan) -> ImageCounts | None:
    """The split sizes of the study's data, or None when it is not here (for estimates;
    a download spec such as ``pneumoniamnist:224`` is not fetched for one)."""
    from cxrlab.data.sources import list_source

    if not Path(plan.data).expanduser().exists():
        return None
    first = _first_config(plan)
    try:
        listing = list_source(plan.data, labels=first.labels, cache_dir=first.cache_dir)
    except CxrlabError:
        return None
    external = 0
    for path in plan.external.values():
        try:
            external += len(list_source(path, labels=first.labels, cache_dir=first.cache_dir))
        except CxrlabError:
            continue  # the sweep will say so; an estimate does without it
    return ImageCounts.of_listing(listing, first, external=external)


def fingerprint(listing) -> str:
    """sha256 of a ``SourceListing``'s relative paths, classes, splits and file sizes."""
    digest = hashlib.sha256(f"{listing.kind}:{len(listing)}:{','.join(listing.classes)}".encode())
    root = str(listing.location)
    for path, label, split in sorted(zip(listing.files, listing.labels, listing.splits, strict=True)):
        file, sep, entry = path.partition("#")  # MedMNIST entries are "<file>#<split>/<index>"
        relative = os.path.relpath(file, root) + sep + entry
        size = "" if sep else _size(path)
        digest.update(f"{relative}|{label}|{split}|{size}\n".encode())
    return digest.hexdigest()[:16]


def _size(path: str) -> int | str:
    try:
        return os.stat(path).st_size
    except OSError:
        return "?"


def _first_config(plan: StudyPlan) -> TrainConfig:
    settings = plan.runs[0].settings if plan.runs else plan.searches[0].fixed
    return TrainConfig(**settings)
