"""Small image data sets made on the fly, for tests of cxrlab and of studies built on it.

The images are X-ray-like only in outline: a grey chest with noise, and for the positive
class a bright blob in one lung, so that a model learns the classes in a few steps. File
names follow the Kermany data set's patterns (``IM-0001-0001.jpeg``,
``person12_bacteria_34.jpeg``), so patient grouping works on them as on the real images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_xray(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    """A grey 'chest' with noise; class 1 ('pneumonia') adds a bright blob in one lung."""
    y, x = np.mgrid[0:size, 0:size] / size
    body = 90 + 60 * np.exp(-((x - 0.5) ** 2) / 0.08)
    image = body + rng.normal(0, 12, (size, size))
    if label == 1:
        cx, cy = rng.uniform(0.25, 0.75), rng.uniform(0.3, 0.7)
        image += 110 * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / 0.012))
    return np.clip(image, 0, 255).astype(np.uint8)


def make_class_folders(
    root: Path, counts: dict[str, int], seed: int = 0, size: int = 48, images_per_patient: int = 2, start: int = 0
) -> Path:
    """Class folders with Kermany-style names: NORMAL as IM-XXXX-000N, others as personN_bacteria_M."""
    rng = np.random.default_rng(seed)
    for label, (name, count) in enumerate(counts.items()):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            patient = start + i // images_per_patient
            if label == 0:
                file = f"IM-{patient:04d}-{i % images_per_patient + 1:04d}.jpeg"
            else:
                file = f"person{patient}_bacteria_{start + i}.jpeg"
            Image.fromarray(synthetic_xray(min(label, 1), rng, size)).save(folder / file, quality=95)
    return root


def make_dataset_root(
    root: Path,
    n_train: int = 40,
    n_test: int = 0,
    seed: int = 0,
    size: int = 48,
    classes: tuple[str, ...] = ("NORMAL", "PNEUMONIA"),
) -> Path:
    """A dataset root: ``train/`` with ``n_train`` images per class, and ``test/`` (other
    patients) when ``n_test`` is given."""
    make_class_folders(root / "train", {c: n_train for c in classes}, seed=seed, size=size)
    if n_test:
        make_class_folders(root / "test", {c: n_test for c in classes}, seed=seed + 1, size=size, start=5000)
    return root


@dataclass
class CliResult:
    """What a command printed, and its exit code."""

    code: int
    out: str
    err: str
