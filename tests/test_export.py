"""cxrlab export: ONNX (run with onnxruntime) and TorchScript (torch.jit.load) give the
probabilities of cxrlab predict, from images prepared as the sidecar JSON says."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlab.core.errors import CxrlabError
from cxrlab.evaluate.runs import predict_images
from cxrlab.training.config import TrainConfig
from cxrlab.training.export import export_run
from cxrlab.training.loop import fit

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from cxrlab.testing import make_dataset_root

    root = make_dataset_root(tmp_path_factory.mktemp("export-data"), n_train=40)
    return fit(
        TrainConfig(
            data=str(root),
            model="scratch_cnn",
            mode="scratch",
            epochs=1,
            image_size=32,
            batch_size=16,
            out=str(tmp_path_factory.mktemp("export-runs")),
            name="cnn",
        ),
        show_progress=False,
        log=lambda line: None,
    )


@pytest.fixture(scope="module")
def images() -> list[str]:
    """Real X-rays of different sizes (downscaled by the decoder) and a colour photo."""
    files = sorted(str(p) for p in (FIXTURES / "kermany").rglob("*.jpeg"))
    return files + [str(FIXTURES / "chelsea.jpg")]


def reference(run_dir: Path, files: list[str]) -> np.ndarray:
    predictions = predict_images(run_dir, files, device="cpu")
    return np.array([list(p.probabilities.values()) for p in predictions])


def test_onnx_matches_predict(run_dir, images, tmp_path, exported_pixels):
    import onnxruntime

    paths = export_run(run_dir, "onnx", out_dir=tmp_path)
    assert [p.name for p in paths] == ["model.onnx", "model.onnx.json"]
    sidecar = json.loads(paths[1].read_text())
    session = onnxruntime.InferenceSession(str(paths[0]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [sidecar["input"]["name"]]
    pixels = exported_pixels(images, sidecar["image_size"])
    (probs,) = session.run([sidecar["output"]["name"]], {"images": pixels})
    assert probs.shape == (len(images), 2)
    np.testing.assert_allclose(probs, reference(run_dir, images), atol=1e-4)
    # The batch size is free: one image alone gives its row of the batch.
    (single,) = session.run(None, {"images": pixels[:1]})
    np.testing.assert_allclose(single, probs[:1], atol=1e-5)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_matches_predict(run_dir, images, exported_pixels):
    paths = export_run(run_dir, "torchscript")
    assert paths[0] == run_dir / "model.torchscript.pt" and paths[1] == run_dir / "model.torchscript.json"
    model = torch.jit.load(str(paths[0]))
    pixels = exported_pixels(images, 32)
    with torch.no_grad():
        probs = model(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(probs, reference(run_dir, images), atol=1e-4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_sidecar_documents_the_input_and_the_decision(run_dir, tmp_path):
    from cxrlab.training.records import load_run

    run = load_run(run_dir)
    sidecar = json.loads(export_run(run_dir, "torchscript", out_dir=tmp_path)[1].read_text())
    assert sidecar["input"]["shape"] == ["B", 1, 32, 32]
    assert sidecar["input"]["range"] == [0.0, 1.0]
    assert sidecar["image_size"] == 32
    assert sidecar["classes"] == ["NORMAL", "PNEUMONIA"]
    assert sidecar["positive_class"] == "PNEUMONIA"
    assert sidecar["threshold"] == pytest.approx(run.metrics.threshold)
    assert sidecar["decision"].startswith("PNEUMONIA if probabilities[:, 1] >= ")
    # scratch_cnn normalises with mean 0.5 and std 0.25 inside the model.
    assert sidecar["normalisation_inside"]["mean"] == [0.5, 0.5, 0.5]
    assert sidecar["normalisation_inside"]["std"] == [0.25, 0.25, 0.25]
    assert sidecar["source_run"]["run_id"] == "cnn"
    assert sidecar["source_run"]["model"] == "scratch_cnn"


def test_unknown_format_is_one_line(run_dir, monkeypatch, capsys):
    with pytest.raises(CxrlabError, match="--format tflite: unknown export format, choose one of onnx, torchscript"):
        export_run(run_dir, "tflite")
    from cxrlab.cli import main

    monkeypatch.setattr(sys, "argv", ["cxrlab", "export", str(run_dir), "--format", "tflite"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "unknown export format" in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_unfinished_run_is_refused(tmp_path):
    with pytest.raises(CxrlabError, match="not a cxrlab run directory"):
        export_run(tmp_path, "onnx")
