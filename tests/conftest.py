"""Shared fixtures: a per-session cache folder, small image data sets made on the fly
(``cxrlab.testing``), the real images in tests/fixtures, and the command line run in-process.

Tests never read ../shared: they make their own data (synthetic X-ray-like images whose
class is learnable in a few steps) plus the handful of real images in tests/fixtures.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from cxrlab.testing import CliResult, make_dataset_root

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


@pytest.fixture
def tiny_root(tmp_path) -> Path:
    """train/ only: 40 NORMAL and 40 PNEUMONIA 48-px images, two per patient."""
    return make_dataset_root(tmp_path / "data", n_train=40)


@pytest.fixture
def fixtures_dir() -> Path:
    """tests/fixtures: a handful of real images, and weights files for the loaders."""
    return FIXTURES


@pytest.fixture
def kermany_fixture() -> Path:
    """Six real Kermany images in class folders (a folder of class folders)."""
    return FIXTURES / "kermany"


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


SMALL = dict(image_size=32, batch_size=16)
STUDY_RUNS = [
    dict(model="scratch_cnn", mode="scratch", epochs=2, lr=1e-3, name="scratch_cnn-scratch-lr=1e-3"),
    dict(model="scratch_cnn", mode="scratch", epochs=2, lr=3e-3, name="scratch_cnn-scratch-lr=3e-3"),
    dict(model="efficientnet_lite0", mode="frozen", epochs=3, name="efficientnet_lite0-frozen"),
    dict(model="efficientnet_lite0", mode="finetune", epochs=2, name="efficientnet_lite0-finetune"),
    dict(model="efficientnet_lite0", mode="gradual", epochs=1, head_epochs=2, name="efficientnet_lite0-gradual"),
]


def _build_study(folder: Path, runs: list[dict], classes: tuple[str, ...] = ("NORMAL", "PNEUMONIA")) -> Path:
    """A study directory ``folder/study`` with ``runs`` fitted into ``study/runs`` (once: a
    finished study is reused)."""
    from cxrlab.training.config import TrainConfig
    from cxrlab.training.loop import fit

    study = folder / "study"
    if (study / "done").exists():
        return study
    data = make_dataset_root(folder / "data", n_train=40, classes=classes)
    for settings in runs:
        fit(
            TrainConfig(data=str(data), out=str(study / "runs"), **SMALL, **settings),
            show_progress=False,
            log=lambda line: None,
        )
    (study / "done").write_text("")
    return study


@pytest.fixture(scope="session")
def build_study():
    """``build_study(folder, runs)``: a study directory of real tiny runs."""
    return _build_study


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> Path:
    """The session's binary study (five runs; built by whichever test asks first)."""
    return _build_study(tmp_path_factory.getbasetemp() / "report-study", STUDY_RUNS)


@pytest.fixture
def exported_pixels():
    """``exported_pixels(files, size)``: the pixels an exported model's sidecar JSON describes
    (Pillow: draft, EXIF turn, grey, bilinear resize), as (B, 1, size, size) float32."""

    def prepared(files: list[str], size: int) -> np.ndarray:
        batch = []
        for path in files:
            image = Image.open(path)
            if image.format == "JPEG":
                image.draft("L", (size, size))
            image = ImageOps.exif_transpose(image).convert("L").resize((size, size), Image.BILINEAR, reducing_gap=3.0)
            batch.append(np.asarray(image, np.float32)[None] / 255)
        return np.stack(batch)

    return prepared
