"""Shared fixtures: a per-session cache folder, and small image data sets made on the fly.

Tests never read ../shared: they make their own data (synthetic X-ray-like images whose
class is learnable in a few steps) plus the handful of real images in tests/fixtures.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FIXTURES = Path(__file__).parent / "fixtures"

# Tests run on two cores; one intra-op thread per process keeps parallel workers from
# fighting over them and keeps CPU results reproducible.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _session_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cxrlab-cache")
    os.environ["CXRLAB_CACHE"] = str(cache)
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch-home"))
    yield cache


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
    make_class_folders(root / "train", {c: n_train for c in classes}, seed=seed, size=size)
    if n_test:
        make_class_folders(root / "test", {c: n_test for c in classes}, seed=seed + 1, size=size, start=5000)
    return root


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    """train/ only: 40 NORMAL and 40 PNEUMONIA 48-px images, two per patient."""
    return make_dataset_root(tmp_path / "data", n_train=40)


@pytest.fixture
def kermany_fixture() -> Path:
    """Six real Kermany images in class folders (a folder of class folders)."""
    return FIXTURES / "kermany"


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the real command line in-process (``main()``, which maps errors to exit codes)."""
    from cxrlab.cli import main

    def run(*args: str) -> CliResult:
        monkeypatch.setattr(sys, "argv", ["cxrlab", *args])
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run
