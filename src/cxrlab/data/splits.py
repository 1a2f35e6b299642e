"""Patient-grouped, stratified splits.

A patient's images are correlated; if one patient sits in both train and test, test
accuracy measures memory of that patient. Held-out splits are therefore carved by patient,
stratified by class, and byte-identical images are tied into one group as well, so a
carved split never holds a copy of a training image.
"""

from __future__ import annotations

import functools
import hashlib
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path

import numpy as np

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import atomic_path

# Held-out masks already carved in this process, by the arrays and settings they came from:
# a command loads its data twice (the cost estimate, then the run) and a study's worker once
# per run. Carved masks are also kept on disk (``memo_dir``), because scikit-learn's grouped
# stratification costs every command seconds (importing it, then carving a few thousand images).
_carved: dict[str, np.ndarray] = {}


def linked_groups(patients: list[str], digests: list[str]) -> np.ndarray:
    """Group ids where images of one patient, or byte-identical images, share a group."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_by_digest: dict[str, str] = {}
    for patient, digest in zip(patients, digests):
        find(patient)
        if digest:
            if digest in first_by_digest:
                parent[find(patient)] = find(first_by_digest[digest])
            else:
                first_by_digest[digest] = patient
    roots = [find(p) for p in patients]
    ids = {root: i for i, root in enumerate(dict.fromkeys(roots))}
    return np.array([ids[r] for r in roots], dtype=np.int64)


def grouped_holdout(
    labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int, memo_dir: Path | None = None
) -> np.ndarray:
    """A boolean mask of about ``fraction`` of the images, whole groups only, class-stratified;
    carved once for given arrays and settings (in this process, and in ``memo_dir`` when given)."""
    labels, groups = np.asarray(labels), np.asarray(groups)
    key = _holdout_key(labels, groups, fraction, seed)
    if key not in _carved:
        mask = _remembered(memo_dir, key, len(labels))
        if mask is None:
            mask = _carve_holdout(labels, groups, fraction, seed)
            _remember(memo_dir, key, mask)
        _carved[key] = mask
    return _carved[key].copy()


def _holdout_key(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> str:
    # The carving is scikit-learn's: another version may carve other splits from the same arrays.
    settings = (labels.dtype.str, groups.dtype.str, len(labels), fraction, seed, _sklearn_version())
    digest = hashlib.sha256(repr(settings).encode())
    digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(np.ascontiguousarray(groups).tobytes())
    return digest.hexdigest()


@functools.cache
def _sklearn_version() -> str:
    return version("scikit-learn")  # read from its metadata once: importing it costs seconds


def _remembered(memo_dir: Path | None, key: str, n: int) -> np.ndarray | None:
    """The mask kept on disk under ``key``, or None (none kept, or not a mask of ``n`` images)."""
    if memo_dir is None:
        return None
    try:
        mask = np.load(memo_dir / f"{key}.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return mask if mask.dtype == bool and mask.shape == (n,) else None


def _remember(memo_dir: Path | None, key: str, mask: np.ndarray) -> None:
    """Keep ``mask`` on disk, written whole or not at all; a cache that cannot be written only
    costs the next command the carving."""
    if memo_dir is None:
        return
    try:
        with atomic_path(memo_dir / f"{key}.npy") as partial, open(partial, "wb") as out:
            np.save(out, mask, allow_pickle=False)
    except (OSError, CxrlabError):
        return


def _carve_holdout(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    n_groups = len(np.unique(groups))
    if fraction <= 0 or n_groups < 2:
        return np.zeros(len(labels), dtype=bool)
    # Stratifying needs at least as many groups of every class as folds.
    fewest = min(len(np.unique(groups[labels == c])) for c in np.unique(labels))
    n_splits = int(min(max(2, round(1 / fraction)), fewest))
    mask = np.zeros(len(labels), dtype=bool)
    if n_splits < 2:
        # Too few groups to stratify: hold out whole groups at random.
        unique = np.unique(groups)
        rng = np.random.default_rng(seed)
        chosen = rng.choice(unique, size=max(1, round(fraction * len(unique))), replace=False)
        mask[np.isin(groups, chosen)] = True
        return mask
    from sklearn.model_selection import StratifiedGroupKFold  # 2 s to import: only when carving

    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(folds.split(np.zeros(len(labels)), labels, groups))
    mask[held] = True
    return mask


def duplicate_groups(digests: list[str]) -> list[list[int]]:
    """Indices of byte-identical images, one list per group of two or more."""
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(digests):
        if digest:
            by_digest[digest].append(i)
    return [indices for indices in by_digest.values() if len(indices) > 1]
