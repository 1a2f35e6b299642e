"""--labels kermany3: NORMAL, BACTERIA and VIRUS from Kermany file names, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrlab.core.errors import CxrlabError
from cxrlab.evaluate.runs import evaluate_run, predict_images
from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import load_run

CLASSES = ["NORMAL", "BACTERIA", "VIRUS"]


def make_kermany3_folders(root: Path, per_class: int, seed: int, start: int = 0) -> Path:
    """NORMAL/IM-XXXX-000N.jpeg and PNEUMONIA/personN_bacteria_M.jpeg, personN_virus_M.jpeg,
    two images per patient; the virus images are hazier than the bacteria ones."""
    from cxrlab.testing import synthetic_xray

    rng = np.random.default_rng(seed)
    (root / "NORMAL").mkdir(parents=True, exist_ok=True)
    (root / "PNEUMONIA").mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
        patient = start + i // 2
        Image.fromarray(synthetic_xray(0, rng, 32)).save(root / "NORMAL" / f"IM-{patient:04d}-{i % 2 + 1:04d}.jpeg")
        Image.fromarray(synthetic_xray(1, rng, 32)).save(
            root / "PNEUMONIA" / f"person{patient}_bacteria_{start + i}.jpeg"
        )
        hazy = np.clip(synthetic_xray(0, rng, 32).astype(np.int16) + 60, 0, 255).astype(np.uint8)
        Image.fromarray(hazy).save(root / "PNEUMONIA" / f"person{1000 + patient}_virus_{start + i}.jpeg")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("kermany3")
    root = base / "root"
    make_kermany3_folders(root / "train", per_class=30, seed=3)
    holdout = make_kermany3_folders(base / "holdout", per_class=6, seed=4, start=500)
    return root, holdout


@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory) -> Path:
    root, _ = data
    return fit(
        TrainConfig(
            data=str(root),
            model="scratch_cnn",
            mode="scratch",
            labels="kermany3",
            epochs=2,
            image_size=32,
            batch_size=16,
            lr=2e-3,
            out=str(tmp_path_factory.mktemp("k3-runs")),
            name="k3",
        ),
        show_progress=False,
        log=lambda line: None,
    )


def test_metrics_have_three_classes(run_dir):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["classes"] == CLASSES
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.shape == (3, 3)
    assert matrix.sum() == metrics["n_test"]
    # The carved test split is stratified: every class is there.
    assert (matrix.sum(axis=1) > 0).all()
    assert set(metrics["per_class"]) == set(CLASSES)
    for key in ("precision", "recall", "f1", "balanced_accuracy", "roc_auc", "test_loss", "test_accuracy"):
        assert np.isfinite(metrics[key]), key
    # No binary threshold in three classes: the decision is the most probable class.
    assert metrics["threshold_rule"] == "argmax"
    assert "sensitivity" not in metrics and metrics.get("threshold") is None


def test_metrics_agree_with_the_saved_predictions(run_dir):
    from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

    run = load_run(run_dir)
    _, labels, probs = run.prediction_arrays("test")
    assert probs.shape == (run.metrics.n_test, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    predicted = probs.argmax(axis=1)
    assert confusion_matrix(labels, predicted, labels=[0, 1, 2]).tolist() == run.metrics.confusion_matrix
    assert run.metrics.f1 == pytest.approx(f1_score(labels, predicted, average="macro", labels=[0, 1, 2]), abs=1e-4)
    # Macro one-vs-rest AUC; the saved probabilities are rounded to 6 places.
    assert run.metrics.roc_auc == pytest.approx(
        roc_auc_score(labels, probs, multi_class="ovr", average="macro"), abs=1e-3
    )


def test_predictions_csv_has_a_column_per_class(run_dir):
    header = (run_dir / "predictions.csv").read_text().splitlines()[0].split(",")
    assert header == ["path", "split", "label", "p_NORMAL", "p_BACTERIA", "p_VIRUS"]
    split_labels = {line.split(",")[2] for line in (run_dir / "split.csv").read_text().splitlines()[1:]}
    assert split_labels == set(CLASSES)


def test_evaluate_on_a_folder_of_class_folders(run_dir, data):
    _, holdout = data
    result = evaluate_run(run_dir, str(holdout), show_progress=False)
    assert result["n_test"] == 18
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (3, 3)
    assert matrix.sum(axis=1).tolist() == [6, 6, 6]
    assert np.isfinite(result["roc_auc"])


def test_predict_returns_three_probabilities(run_dir, data):
    _, holdout = data
    files = sorted(str(p) for p in (holdout / "PNEUMONIA").glob("*virus*"))[:3]
    predictions = predict_images(run_dir, files, device="cpu")
    assert len(predictions) == 3
    for p in predictions:
        assert list(p.probabilities) == CLASSES
        assert sum(p.probabilities.values()) == pytest.approx(1.0, abs=1e-6)
        assert p.predicted == max(p.probabilities, key=p.probabilities.get)


def test_export_sidecar_of_three_classes(run_dir, tmp_path):
    from cxrlab.training.export import export_run

    sidecar = json.loads(export_run(run_dir, "torchscript", out_dir=tmp_path)[1].read_text())
    assert sidecar["classes"] == CLASSES
    assert sidecar["output"]["shape"] == ["B", 3]
    assert sidecar["threshold"] is None and sidecar["positive_class"] is None
    assert sidecar["decision"] == "the class with the highest probability"


def test_a_pneumonia_file_without_a_type_is_one_line_error(tmp_path):
    from cxrlab.testing import make_class_folders

    root = make_class_folders(tmp_path / "data" / "train", {"NORMAL": 4, "PNEUMONIA": 4}, size=32)
    (root / "PNEUMONIA" / "person1_bacteria_2.jpeg").rename(root / "PNEUMONIA" / "person1_1.jpeg")
    with pytest.raises(
        CxrlabError, match=r"--labels kermany3: no _bacteria_ or _virus_ in the file name person1_1.jpeg"
    ):
        fit(
            TrainConfig(
                data=str(tmp_path / "data"),
                model="scratch_cnn",
                mode="scratch",
                labels="kermany3",
                epochs=1,
                image_size=32,
                out=str(tmp_path / "runs"),
            ),
            show_progress=False,
            log=lambda line: None,
        )
    assert not (tmp_path / "runs").exists()
