"""Patient-grouped, stratified splits.

A patient's images are correlated; if one patient sits in both train and test, test
accuracy measures memory of that patient. Held-out splits are therefore carved by patient,
stratified by class, and byte-identical images are tied into one group as well, so a
carved split never holds a copy of a training image.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path

import numpy as np

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import atomic_path

# Held-out masks already carved in this process, by the arrays and settings they came from:
# a command loads its data twice (the cost estimate, then the run) and a study's worker once
# per run. Carved masks are also kept on disk (``memo_dir``), because carving a few thousand
# images by group takes a second or more.
_carved: dict[str, np.ndarray] = {}
# Part of a kept mask's key: a change to the carving that moves any image must change it, so
# that no mask carved the old way is served.
CARVING_VERSION = "stratified-group-fold/1"


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
    settings = (labels.dtype.str, groups.dtype.str, len(labels), fraction, seed, CARVING_VERSION)
    digest = hashlib.sha256(repr(settings).encode())
    digest.update(np.ascontiguousarray(labels).tobytes())
    digest.update(np.ascontiguousarray(groups).tobytes())
    return digest.hexdigest()


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
    if n_splits < 2:
        # Too few groups to stratify: hold out whole groups at random.
        mask = np.zeros(len(labels), dtype=bool)
        unique = np.unique(groups)
        rng = np.random.default_rng(seed)
        chosen = rng.choice(unique, size=max(1, round(fraction * len(unique))), replace=False)
        mask[np.isin(groups, chosen)] = True
        return mask
    return stratified_group_fold(labels, groups, n_splits, seed)


def stratified_group_fold(labels: np.ndarray, groups: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """The first test fold of scikit-learn's ``StratifiedGroupKFold(n_splits, shuffle=True,
    random_state=seed)`` (version 1.9), as a mask: the same greedy assignment, the same
    arithmetic in the same order, so the same images are held out.

    Written here because importing scikit-learn cost every command about 1.5 s; the test suite
    checks the masks against scikit-learn's own folds. Groups, shuffled by the seed, are taken
    in order of falling spread over the classes, and each goes to the fold whose class shares
    then vary least over the folds; near ties go to the fold holding fewer images. (After
    scikit-learn's implementation, BSD-3-Clause, itself after a Kaggle kernel, Apache-2.0.)"""
    _, class_of, class_counts = np.unique(labels, return_inverse=True, return_counts=True)
    group_ids, group_of = np.unique(groups, return_inverse=True)
    counts_per_group = np.zeros((len(group_ids), len(class_counts)))
    np.add.at(counts_per_group, (group_of, class_of), 1)

    order = np.arange(len(group_ids))
    np.random.RandomState(seed).shuffle(order)
    counts_per_group = counts_per_group[order]
    shuffled_group_of = np.empty_like(order)
    shuffled_group_of[order] = np.arange(order.size)
    group_of = shuffled_group_of[group_of]

    counts_per_fold = np.zeros((n_splits, len(class_counts)))
    share_scale = class_counts.reshape(1, -1)
    first_fold = []
    for group in np.argsort(-np.std(counts_per_group, axis=1), kind="stable"):
        group_counts = counts_per_group[group]
        best_fold, best_spread, best_size = 0, np.inf, np.inf
        for fold in range(n_splits):
            counts_per_fold[fold] += group_counts
            spread = np.std(counts_per_fold / share_scale, axis=0).mean()
            counts_per_fold[fold] -= group_counts
            size = counts_per_fold[fold].sum()
            if spread < best_spread or (_isclose(spread, best_spread) and size < best_size):
                best_fold, best_spread, best_size = fold, spread, size
        counts_per_fold[best_fold] += group_counts
        if best_fold == 0:
            first_fold.append(group)
    return np.isin(group_of, first_fold)


def _isclose(a: float, b: float) -> bool:
    """``np.isclose(a, b)`` for two floats, without its array machinery (a carving compares thousands)."""
    if np.isinf(b):
        return bool(a == b)
    return abs(a - b) <= 1e-8 + 1e-5 * abs(b)


def duplicate_groups(digests: list[str]) -> list[list[int]]:
    """Indices of byte-identical images, one list per group of two or more."""
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(digests):
        if digest:
            by_digest[digest].append(i)
    return [indices for indices in by_digest.values() if len(indices) > 1]
