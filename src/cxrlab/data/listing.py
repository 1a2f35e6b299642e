"""What a source holds before decoding, one entry per image, and how its names print."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")


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


def printable(path: str | os.PathLike) -> str:
    """A path as text that prints anywhere: bytes that are not UTF-8 shown as \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else type(exc).__name__
