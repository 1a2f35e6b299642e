"""``cxrlab data inspect``: what a data source holds, without training anything."""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from typing import NamedTuple

import numpy as np
from PIL import Image

from cxrlab.core.progress import progress_bar
from cxrlab.data.dataset import Carving, carve_splits, check_split_seed, label_conflicts
from cxrlab.data.images import decode_file
from cxrlab.data.listing import SourceListing
from cxrlab.data.patients import patient_ids
from cxrlab.data.sources import SPLITS, list_source
from cxrlab.data.splits import duplicate_groups


def _inspect_file(path: str) -> tuple[str, int, int, str, str]:
    """``(sha1, width, height, mode, error)``; a full decode at a tiny size proves the file reads."""
    _pixels, digest, error = decode_file(path, 16)
    width = height = 0
    mode = ""
    if not error:
        try:
            with Image.open(path) as image:
                width, height, mode = image.width, image.height, image.mode
        except Exception:
            mode = "DICOM"
    return digest, width, height, mode, error


class FileFacts(NamedTuple):
    """What reading every image of a source found."""

    digests: list[str]  # SHA-1 of each image's bytes, in listing order
    sizes: Counter  # "WxH" -> images of that size
    modes: Counter  # PIL mode (or "DICOM", "uint8 array") -> images
    errors: dict[str, str]  # path -> why it could not be read


def inspect_source(
    spec: str,
    labels: str = "folders",
    split_seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.15,
    cache_dir: str | None = None,
    show_progress: bool = True,
) -> dict:
    """A JSON-ready summary of ``spec``: counts, patients, sizes, duplicates, overlap, balance."""
    check_split_seed(split_seed)
    listing = list_source(spec, labels=labels, cache_dir=cache_dir)
    facts = _file_facts(listing, show_progress)
    digests, sizes, errors = facts.digests, facts.sizes, facts.errors
    patients = patient_ids(listing.kind, listing.files)
    labels_array = np.asarray(listing.labels, dtype=np.int64)
    layout = [s or "all" for s in listing.splits]
    groups = duplicate_groups(digests)
    cross = [g for g in groups if len({layout[i] for i in g}) > 1]
    overlap = _patients_in_several_splits(patients, layout)

    summary = {
        "source": listing.location,
        "kind": listing.kind,
        "classes": listing.classes,
        "images": len(listing),
        "patients": len(set(patients)),
        "splits": _split_counts(listing, layout, patients),
        "image_sizes": dict(sizes.most_common(10)),
        "distinct_sizes": len(sizes),
        "modes": dict(facts.modes),
        "duplicate_groups": len(groups),
        "duplicate_images": sum(len(g) for g in groups),
        "duplicate_groups_across_splits": len(cross),
        "duplicate_examples": [[listing.files[i] for i in g] for g in groups[:5]],
        # The same bytes under two labels: a run stops on them unless --on-duplicate-label keep.
        "duplicates_with_different_labels": label_conflicts(listing.files, digests, labels_array, listing.classes),
        "patients_in_several_splits": len(overlap),
        "patient_overlap_examples": overlap[:5],
        "unreadable": [{"path": p, "reason": r} for p, r in errors.items()],
        "ignored_files": listing.ignored,
        "notes": listing.notes,
    }
    if listing.kind != "folder":
        summary["run_splits"], summary["run_split_notes"] = _run_splits(
            listing, facts, patients, val_fraction, test_fraction, split_seed
        )
    return summary


def _file_facts(listing: SourceListing, show_progress: bool) -> FileFacts:
    """Digest, size and mode of every image, and the files that do not read; an .npz's arrays
    are all read (uint8, one size), files are decoded in parallel."""
    n = len(listing)
    if listing.kind == "npz":
        digests = [hashlib.sha1(_npz_image(listing, i).tobytes()).hexdigest() for i in range(n)]
        sizes = Counter(
            f"{_npz_image(listing, i).shape[1]}x{_npz_image(listing, i).shape[0]}" for i in range(min(n, 1))
        )
        return FileFacts(digests, sizes, Counter({"uint8 array": n}), {})
    results = _inspect_files(listing.files, show_progress)
    return FileFacts(
        digests=[r[0] for r in results],
        sizes=Counter(f"{r[1]}x{r[2]}" for r in results if not r[4]),
        modes=Counter(r[3] for r in results if not r[4]),
        errors={listing.files[i]: r[4] for i, r in enumerate(results) if r[4]},
    )


def _split_counts(listing: SourceListing, layout: list[str], patients: list[str]) -> dict[str, dict]:
    """Per split of the layout ("all" for a plain folder): images, patients, and per class the
    count and share."""
    by_split: dict[str, dict] = {}
    for split in dict.fromkeys(layout):
        idx = [i for i, s in enumerate(layout) if s == split]
        counts = Counter(listing.classes[listing.labels[i]] for i in idx)
        by_split[split] = {
            "images": len(idx),
            "patients": len({patients[i] for i in idx}),
            "classes": {c: counts.get(c, 0) for c in listing.classes},
            "balance": {c: round(counts.get(c, 0) / max(1, len(idx)), 4) for c in listing.classes},
        }
    return by_split


def _patients_in_several_splits(patients: list[str], layout: list[str]) -> list[str]:
    """The patients whose images the layout puts in more than one split, sorted."""
    patient_splits: dict[str, set] = defaultdict(set)
    for p, s in zip(patients, layout):
        patient_splits[p].add(s)
    return sorted(p for p, s in patient_splits.items() if len(s) > 1)


def _run_splits(
    listing: SourceListing,
    facts: FileFacts,
    patients: list[str],
    val_fraction: float,
    test_fraction: float,
    split_seed: int,
) -> tuple[dict[str, dict[str, int]], list[str]]:
    """The splits a run would use, per split and class, with their notes: the layout's, with
    val (and test) carved by patient, over the images that read."""
    labels_array = np.asarray(listing.labels, dtype=np.int64)
    ok = np.array([f not in facts.errors for f in listing.files])
    keep = np.flatnonzero(ok)
    notes: list[str] = []
    carved = carve_splits(
        labels_array[keep],
        [patients[i] for i in keep],
        [facts.digests[i] for i in keep],
        [listing.splits[i] for i in keep],
        len(keep),
        Carving(val_fraction, test_fraction, split_seed),
        notes,
    )
    counts = {
        s: {c: int(((carved == s) & (labels_array[keep] == k)).sum()) for k, c in enumerate(listing.classes)}
        for s in SPLITS
    }
    return counts, notes


def _npz_image(listing, i: int) -> np.ndarray:
    split, _, index = listing.files[i].rpartition("#")[2].partition("/")
    return listing.arrays[split][int(index)]


def _inspect_files(files: list[str], show_progress: bool) -> list[tuple]:
    results: list[tuple] = []
    with progress_bar(f"Reading {len(files)} images", len(files), enabled=show_progress) as advance:
        workers = min(os.cpu_count() or 1, max(1, len(files) // 64))
        if workers <= 1:
            for f in files:
                results.append(_inspect_file(f))
                advance(1)
        else:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                for result in pool.map(_inspect_file, files, chunksize=64):
                    results.append(result)
                    advance(1)
    return results
