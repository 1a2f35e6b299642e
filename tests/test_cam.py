"""Grad-CAM overlays of a real (tiny) run, through the function and through `cxrlab predict --cam`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from cxrlab.cli import app
from cxrlab.evaluate.cam import DISPLAY_SIZE, cam_maps, read_images, write_cam_overlays
from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import load_run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A scratch CNN that has learned the synthetic 'pneumonia' blob (48 px, 8 epochs)."""
    from cxrlab.testing import make_dataset_root

    root = make_dataset_root(tmp_path_factory.mktemp("cam-data"), n_train=40)
    run_dir = fit(
        TrainConfig(
            data=str(root),
            model="scratch_cnn",
            mode="scratch",
            epochs=8,
            image_size=48,
            batch_size=16,
            out=str(tmp_path_factory.mktemp("cam-runs")),
        ),
        show_progress=False,
    )
    return root, run_dir


def blob_image(cx: float, cy: float, size: int = 48, seed: int = 0) -> np.ndarray:
    """The fixture's synthetic X-ray with its bright 'consolidation' at a chosen place."""
    y, x = np.mgrid[0:size, 0:size] / size
    image = 90 + 60 * np.exp(-((x - 0.5) ** 2) / 0.08) + np.random.default_rng(seed).normal(0, 12, (size, size))
    image += 110 * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / 0.012))
    return np.clip(image, 0, 255).astype(np.uint8)


def test_heatmap_of_the_disease_class_sits_on_the_blob(trained_run):
    _, run_dir = trained_run
    run = load_run(run_dir)
    centres = [(0.3, 0.35), (0.7, 0.35), (0.3, 0.65), (0.7, 0.65)]
    pixels = np.stack([blob_image(cx, cy, seed=i) for i, (cx, cy) in enumerate(centres)])
    pneumonia = run.classes.index("PNEUMONIA")
    model = run.load_model()
    maps = cam_maps(
        model, model.get_submodule("backbone.features")[-1], pixels, np.full(4, pneumonia), torch.device("cpu")
    )
    assert maps.shape == pixels.shape and maps.min() >= 0 and maps.max() <= 1
    rows, cols = np.mgrid[0:48, 0:48] / 48
    for (cx, cy), heatmap in zip(centres, maps):
        assert heatmap.sum() > 0, "an empty heatmap explains nothing"
        centre = np.array([(cols * heatmap).sum(), (rows * heatmap).sum()]) / heatmap.sum()
        mirrored = np.array([1 - cx, 1 - cy])
        # The heat is nearer the blob than the mirror image of the blob on the other side.
        assert np.linalg.norm(centre - (cx, cy)) < np.linalg.norm(centre - mirrored)


def test_write_cam_overlays_writes_one_png_per_image(trained_run, tmp_path):
    root, run_dir = trained_run
    folder = root / "train" / "PNEUMONIA"
    single = sorted((root / "train" / "NORMAL").iterdir())[0]
    written = write_cam_overlays(run_dir, [str(folder), str(single)], tmp_path / "cam", device="cpu")
    assert len(written) == len(list(folder.iterdir())) + 1
    assert len({p.name for p in written}) == len(written)
    assert written[-1].name.startswith(single.stem + "-gradcam-")
    picture = np.asarray(Image.open(written[0]))
    assert picture.shape == (DISPLAY_SIZE, DISPLAY_SIZE, 3) and picture.dtype == np.uint8
    # Colour means a heatmap was laid over the grey X-ray.
    assert np.abs(picture[..., 0].astype(int) - picture[..., 2]).mean() > 5


def test_predict_cam_from_the_command_line(trained_run, tmp_path):
    root, run_dir = trained_run
    images = sorted((root / "train" / "PNEUMONIA").iterdir())[:3]
    result = CliRunner().invoke(
        app, ["predict", str(run_dir), *map(str, images), "--cam", str(tmp_path / "out"), "--device", "cpu"]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(names) == 3
    # The images trained the run, so a warning line precedes the predictions.
    lines = [line for line in result.output.strip().splitlines() if "\t" in line]
    assert len(lines) == 3 and "trained or validated" in result.output
    for image, line in zip(images, lines):
        predicted = line.split("\t")[1]
        assert f"{image.stem}-gradcam-{predicted}.png" in names


def test_read_images_finds_files_and_npz_entries_and_flags_missing_ones(tmp_path):
    arrays = np.random.default_rng(0).integers(0, 255, (3, 28, 28), dtype=np.uint8)
    np.savez(tmp_path / "mnist.npz", test_images=arrays, test_labels=np.zeros(3))
    Image.fromarray(arrays[0]).save(tmp_path / "a.png")
    paths = [
        str(tmp_path / "a.png"),
        f"{tmp_path / 'mnist.npz'}#test/2",
        str(tmp_path / "gone.png"),
        f"{tmp_path / 'mnist.npz'}#test/9",
    ]
    pixels, found = read_images(paths, 28)
    assert found.tolist() == [True, True, False, False]
    assert np.array_equal(pixels[0], arrays[0]) and np.array_equal(pixels[1], arrays[2])
    assert not pixels[2].any()
