"""Data-size subsets of the training split: how much does each way of using a pretrained
network depend on the amount of data?

A subset keeps whole patients (and byte-identical images) together, keeps each class at
its share, and is nested: the patients of a smaller fraction are inside every larger one,
because every fraction takes a prefix of one seeded order of the patients. Validation and
test splits are left as they are, so every fraction is scored on the same images.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cxrlab.data.dataset import Dataset
from cxrlab.data.splits import linked_groups

UNUSED = "unused"  # the split a training image left out of the subset is recorded under


def nested_subset(labels: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask of about ``fraction`` of the images of each class, in whole groups.

    Each group counts in the class most of its images hold; the groups of a class are put in
    an order drawn from ``seed`` alone, and the mask takes the shortest prefix that reaches
    the class's share (at least one group), so a smaller fraction's mask is inside a larger one's.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    mask = np.zeros(len(labels), dtype=bool)
    if fraction >= 1:
        mask[:] = True
        return mask
    unique, inverse = np.unique(groups, return_inverse=True)
    # The class of a group: the one most of its images hold (ties: the lower class index).
    counts = np.zeros((len(unique), int(labels.max()) + 1), dtype=np.int64)
    np.add.at(counts, (inverse, labels), 1)
    group_class, group_size = counts.argmax(1), counts.sum(1)
    order = np.random.default_rng(seed).permutation(len(unique))
    chosen = np.zeros(len(unique), dtype=bool)
    for c in np.unique(group_class):
        ranked = order[group_class[order] == c]
        want = fraction * group_size[ranked].sum()
        reached = np.cumsum(group_size[ranked]) >= want - 1e-9
        take = int(np.argmax(reached)) + 1 if reached.any() else len(ranked)
        chosen[ranked[:take]] = True
    return chosen[inverse]


def keep_train_fraction(data: Dataset, fraction: float, seed: int) -> Dataset:
    """``data`` with only a nested, stratified, patient-grouped ``fraction`` of its training
    images left in the train split (the others recorded as ``unused``)."""
    if fraction >= 1:
        return data
    train = data.indices("train")
    groups = linked_groups([data.patients[i] for i in train], [data.digests[i] for i in train])
    keep = nested_subset(data.labels[train], groups, fraction, seed)
    splits = data.splits.astype(object)  # a fixed-width string array would cut "unused" short
    splits[train[~keep]] = UNUSED
    splits = splits.astype(str)
    note = f"training subset: {int(keep.sum())} of {len(train)} train images ({fraction:g}, nested, seed {seed})"
    return dataclasses.replace(data, splits=splits, split_notes=[*data.split_notes, note])
