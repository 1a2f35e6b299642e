"""The Python API: cxrlab.train / load_run / Run and its methods, on the same records the
command line writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import cxrlab
from cxrlab.core.errors import CxrlabError


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> cxrlab.Run:
    from cxrlab.testing import make_dataset_root

    root = make_dataset_root(tmp_path_factory.mktemp("api-data"), n_train=40)
    return cxrlab.train(
        data=root,
        model="scratch_cnn",
        mode="scratch",
        epochs=2,
        image_size=32,
        batch_size=16,
        lr=2e-3,
        out=str(tmp_path_factory.mktemp("api-runs")),
        name="api",
        show_progress=False,
    )


def test_import_is_light_and_train_is_a_plain_function():
    code = (
        "import sys, types, cxrlab\n"
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules\n"
        "assert isinstance(cxrlab.train, types.FunctionType)\n"
        # The training layer has its own name, so importing it rebinds nothing.
        "import cxrlab.training.config\n"
        "assert isinstance(cxrlab.train, types.FunctionType)\n"
        "from cxrlab import train\n"
        "assert train is cxrlab.train\n"
        "print(cxrlab.__version__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    from importlib.metadata import version

    assert result.stdout.strip() == version("cxrlab")


def test_unknown_attribute_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        cxrlab.trian  # noqa: B018


def test_train_returns_the_run(run):
    assert isinstance(run, cxrlab.Run)
    assert run.status.status == "finished"
    assert run.path.name == "api" and (run.path / "model.pt").exists()
    assert run.config.model == "scratch_cnn" and run.config.epochs == 2 and run.config.lr == 2e-3
    assert run.metrics.as_json() == json.loads((run.path / "metrics.json").read_text())
    assert run.classes == ["NORMAL", "PNEUMONIA"]


def test_history_is_a_dataframe_of_history_csv(run):
    history = run.history
    assert isinstance(history, pd.DataFrame)
    assert list(history["epoch"]) == [1, 2]
    assert {"train_loss", "val_loss", "train_acc", "val_acc", "lr", "seconds"} <= set(history.columns)
    assert history["lr"].dtype == float
    written = pd.read_csv(run.path / "history.csv")
    np.testing.assert_allclose(history["val_loss"], written["val_loss"])


def test_load_run_reads_the_same_run(run):
    again = cxrlab.load_run(run.path)
    assert again.metrics == run.metrics and again.config == run.config
    pd.testing.assert_frame_equal(again.history, run.history)
    assert cxrlab.load_run(run).path == run.path
    assert [r.path for r in cxrlab.list_runs(run.path.parent)] == [run.path]
    with pytest.raises(CxrlabError, match="not a cxrlab run directory"):
        cxrlab.load_run(run.path.parent)


def test_evaluate_on_the_training_root_reproduces_the_test_metrics(run):
    result = run.evaluate(run.config.data)
    # Same carved test split, same checkpoint, same threshold: the same numbers.
    assert result["n_test"] == run.metrics.n_test
    assert result["test_accuracy"] == pytest.approx(run.metrics.test_accuracy)
    assert result["roc_auc"] == pytest.approx(run.metrics.roc_auc, abs=1e-9)
    assert result["confusion_matrix"] == run.metrics.confusion_matrix


def test_predict_gives_the_saved_test_probabilities(run):
    paths, _, probs = run.prediction_arrays("test")
    predictions = run.predict(paths[:5], device="cpu")
    assert [p.path for p in predictions] == paths[:5]
    got = np.array([[p.probabilities[c] for c in run.classes] for p in predictions])
    np.testing.assert_allclose(got, probs[:5], atol=2e-6)  # predictions.csv keeps 6 decimals
    assert run.predict(Path(paths[0]))[0].path == paths[0]


def test_plot_curves_draws_the_history(run):
    from matplotlib.figure import Figure

    figure = run.plot_curves()
    assert isinstance(figure, Figure)
    loss_axes = figure.axes[0]
    drawn = [list(np.asarray(line.get_ydata(), dtype=float)) for line in loss_axes.get_lines()]
    assert any(np.allclose(y, run.history["val_loss"]) for y in drawn if len(y) == 2)


def test_export_from_the_run(run, tmp_path):
    model_file, sidecar = run.export("torchscript", out_dir=tmp_path)
    assert model_file.exists() and json.loads(sidecar.read_text())["source_run"]["run_id"] == "api"


def test_compare_takes_runs_and_paths(run, tmp_path):
    result = cxrlab.compare([run, str(run.path)], out_dir=tmp_path / "compare")
    assert len(result["runs"]) == 2 and len(result["pairs"]) == 1
    assert result["n_test"] == run.metrics.n_test
    assert (tmp_path / "compare" / "comparison.md").exists()


def test_sweep_with_overrides_as_a_mapping(tiny_root, tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(
        f"name: api-sweep\ndata: {tiny_root}\ndefaults: {{image_size: 32, batch_size: 16}}\n"
        "runs:\n  - {model: scratch_cnn, mode: scratch, epochs: 3}\n"
    )
    study_dir = cxrlab.sweep(study, overrides={"epochs": 1}, out=tmp_path / "studies", show_progress=False)
    assert study_dir == tmp_path / "studies" / "api-sweep"
    (swept,) = cxrlab.list_runs(study_dir / "runs")
    assert swept.config.epochs == 1 and len(swept.history) == 1


def test_bad_settings_are_one_line_errors(tiny_root, tmp_path):
    tmp_path = tmp_path / "runs"
    with pytest.raises(CxrlabError, match="unknown setting 'epoch'"):
        cxrlab.train(data=tiny_root, model="scratch_cnn", mode="scratch", epoch=1, out=str(tmp_path))
    with pytest.raises(CxrlabError, match=r"train: epochs: .*greater than or equal to 1"):
        cxrlab.train(data=tiny_root, model="scratch_cnn", mode="scratch", epochs=0, out=str(tmp_path))
    with pytest.raises(CxrlabError, match="unknown model 'resnet5'"):
        cxrlab.train(data=tiny_root, model="resnet5", mode="scratch", out=str(tmp_path))
    with pytest.raises(CxrlabError, match="train needs data and model"):
        cxrlab.train(model="scratch_cnn")
    assert not tmp_path.exists()


def test_model_cards_table():
    cards = cxrlab.model_cards(["scratch_cnn", "efficientnet_lite0"], image_size=32)
    assert list(cards["model"]) == ["scratch_cnn", "efficientnet_lite0"]
    assert (cards["params"] > cards["trainable_frozen"]).all()
    assert cards.loc[1, "imagenet_top1"] == pytest.approx(75.1)
