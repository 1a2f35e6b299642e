"""Training: the three modes, model selection, the run directory, and scoring."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from cxrlab.core import metrics as M
from cxrlab.core.decision import youden_threshold
from cxrlab.core.errors import CxrlabError
from cxrlab.models.registry import build_model
from cxrlab.models.weights import load_weights
from cxrlab.testing import make_dataset_root
from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import list_runs, load_run
from cxrlab.training.rundir import load_tensors


def _config(root, tmp_path, **settings) -> TrainConfig:
    base = dict(
        data=str(root), model="efficientnet_lite0", image_size=32, batch_size=16, epochs=2, out=str(tmp_path / "runs")
    )
    base.update(settings)
    return TrainConfig(**base)


def _state(run_dir):
    return load_tensors(run_dir / "model.pt")["state_dict"]


def test_frozen_keeps_every_backbone_tensor_and_trains_the_head(tiny_root, tmp_path):
    run_dir = fit(_config(tiny_root, tmp_path, mode="frozen", epochs=3, lr=1e-2), show_progress=False)
    reference = build_model("efficientnet_lite0")
    load_weights(reference, "efficientnet_lite0", "imagenet")
    trained = _state(run_dir)
    backbone_keys = [k for k in reference.state_dict() if k.startswith("backbone.")]
    assert any("running_mean" in k for k in backbone_keys)
    for key in backbone_keys:  # parameters and BatchNorm buffers alike
        assert torch.equal(trained[key], reference.state_dict()[key]), key
    assert not torch.equal(trained["head.weight"], reference.state_dict()["head.weight"])


def test_frozen_without_augmentation_through_the_backbone_every_step(tiny_root, tmp_path):
    """Training through the frozen backbone but with BatchNorm running statistics frozen too."""
    run_dir = fit(
        _config(tiny_root, tmp_path, mode="frozen", feature_cache=False, augment="light", epochs=1), show_progress=False
    )
    reference = build_model("efficientnet_lite0")
    load_weights(reference, "efficientnet_lite0", "imagenet")
    trained = _state(run_dir)
    assert torch.equal(trained["backbone.bn2.running_var"], reference.state_dict()["backbone.bn2.running_var"])


def test_finetune_changes_the_backbone(tiny_root, tmp_path):
    run_dir = fit(_config(tiny_root, tmp_path, mode="finetune", epochs=1), show_progress=False)
    reference = build_model("efficientnet_lite0")
    load_weights(reference, "efficientnet_lite0", "imagenet")
    trained = _state(run_dir)
    assert not torch.equal(trained["backbone.conv_stem.weight"], reference.state_dict()["backbone.conv_stem.weight"])
    assert not torch.equal(trained["backbone.bn1.running_mean"], reference.state_dict()["backbone.bn1.running_mean"])


def test_cached_features_give_the_same_head_as_the_backbone_path(tiny_root, tmp_path):
    settings = dict(mode="frozen", epochs=3, augment="none", seed=7)
    cached = fit(_config(tiny_root, tmp_path, name="cached", **settings), show_progress=False)
    direct = fit(_config(tiny_root, tmp_path, name="direct", feature_cache=False, **settings), show_progress=False)
    a, b = _state(cached), _state(direct)
    assert torch.allclose(a["head.weight"], b["head.weight"], atol=1e-5)
    assert torch.allclose(a["head.bias"], b["head.bias"], atol=1e-5)
    ma, mb = load_run(cached).metrics, load_run(direct).metrics
    assert ma.test_loss == pytest.approx(mb.test_loss, abs=1e-5)


def test_selected_epoch_is_the_lowest_validation_loss(tiny_root, tmp_path):
    run = load_run(
        fit(_config(tiny_root, tmp_path, model="scratch_cnn", mode="scratch", epochs=4, lr=3e-3), show_progress=False)
    )
    val_losses = [row.val_loss for row in run.epochs]
    assert run.metrics.best_epoch == int(np.argmin(val_losses)) + 1
    by_accuracy = load_run(
        fit(
            _config(
                tiny_root,
                tmp_path,
                model="scratch_cnn",
                mode="scratch",
                epochs=4,
                lr=3e-3,
                select="val_accuracy",
                name="acc",
            ),
            show_progress=False,
        )
    )
    accuracies = [row.val_acc for row in by_accuracy.epochs]
    assert by_accuracy.metrics.best_epoch == int(np.argmax(accuracies)) + 1


def test_run_directory_records(tiny_root, tmp_path):
    run_dir = fit(_config(tiny_root, tmp_path, model="scratch_cnn", mode="scratch"), show_progress=False)
    for name in (
        "config.yaml",
        "split.csv",
        "history.csv",
        "metrics.json",
        "predictions.csv",
        "model.pt",
        "status.json",
    ):
        assert (run_dir / name).exists(), name
    assert not (run_dir / "last.pt").exists()
    run = load_run(run_dir)
    assert run.finished and run.config.data_info.fingerprint and run.config.environment["torch"]
    with open(run_dir / "history.csv") as f:
        assert next(csv.reader(f)) == [
            "epoch",
            "phase",
            "train_loss",
            "train_acc",
            "val_loss",
            "val_acc",
            "lr",
            "seconds",
            "cpu_seconds",
            "val_auc",
        ]
    for key in (
        "test_loss",
        "test_accuracy",
        "balanced_accuracy",
        "sensitivity",
        "specificity",
        "precision",
        "f1",
        "roc_auc",
        "confusion_matrix",
        "train_seconds",
        "best_epoch",
        "n_train",
        "n_val",
        "n_test",
        "mode",
        "model",
        "weights",
    ):
        assert key in run.metrics.as_json(), key
    with open(run_dir / "split.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 80 and {r["split"] for r in rows} == {"train", "val", "test"}
    paths, _labels, probs = run.prediction_arrays("test")
    assert len(paths) == run.metrics.n_test and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_metrics_json_agrees_with_predictions_and_sklearn(tiny_root, tmp_path):
    from sklearn import metrics as sk

    run = load_run(
        fit(_config(tiny_root, tmp_path, model="scratch_cnn", mode="scratch", epochs=2), show_progress=False)
    )
    _, labels, probs = run.prediction_arrays("test")
    predicted = (probs[:, 1] >= run.metrics.threshold).astype(int)
    assert run.metrics.test_accuracy == pytest.approx(sk.accuracy_score(labels, predicted))
    assert run.metrics.roc_auc == pytest.approx(sk.roc_auc_score(labels, probs[:, 1]))
    assert run.metrics.test_loss == pytest.approx(sk.log_loss(labels, probs, labels=[0, 1]), abs=1e-5)
    assert run.metrics.confusion_matrix == sk.confusion_matrix(labels, predicted, labels=[0, 1]).tolist()


def test_a_killed_run_is_not_listed_as_finished(tiny_root, tmp_path):
    class Killed(KeyboardInterrupt):
        pass

    def die_after_first_epoch(line):
        if line.startswith("epoch"):
            raise Killed()

    with pytest.raises(Killed):
        fit(
            _config(tiny_root, tmp_path, model="scratch_cnn", mode="scratch", name="killed"),
            show_progress=False,
            log=die_after_first_epoch,
        )
    run_dir = tmp_path / "runs" / "killed"
    assert (run_dir / "history.csv").exists() and not (run_dir / "metrics.json").exists()
    assert list_runs(tmp_path / "runs") == []
    with pytest.raises(CxrlabError, match="did not finish"):
        load_run(run_dir)


def test_gradual_records_both_phases(tiny_root, tmp_path):
    run = load_run(fit(_config(tiny_root, tmp_path, mode="gradual", head_epochs=2, epochs=1), show_progress=False))
    assert [row.phase for row in run.epochs] == ["head", "head", "network"]
    assert [row.epoch for row in run.epochs] == [1, 2, 3]


# Metrics are plain functions: checked against scikit-learn on random data.


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metric_functions_equal_sklearn(seed):
    from sklearn import metrics as sk

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 300)
    scores = np.clip(y * 0.3 + rng.random(300) * 0.8, 0, 1)
    scores[:20] = 0.5  # ties
    pred = (scores >= 0.5).astype(int)
    probs = np.stack([1 - scores, scores], 1)
    assert M.accuracy(y, pred) == pytest.approx(sk.accuracy_score(y, pred))
    assert M.balanced_accuracy(y, pred, 2) == pytest.approx(sk.balanced_accuracy_score(y, pred))
    assert M.sensitivity(y, pred) == pytest.approx(sk.recall_score(y, pred))
    assert M.specificity(y, pred) == pytest.approx(sk.recall_score(y, pred, pos_label=0))
    assert M.precision_per_class(y, pred, 2)[1] == pytest.approx(sk.precision_score(y, pred))
    assert M.f1_per_class(y, pred, 2)[1] == pytest.approx(sk.f1_score(y, pred))
    assert M.roc_auc(y, scores) == pytest.approx(sk.roc_auc_score(y, scores))
    assert M.log_loss(y, probs) == pytest.approx(sk.log_loss(y, probs))
    assert M.confusion_matrix(y, pred, 2).tolist() == sk.confusion_matrix(y, pred).tolist()
    fpr, tpr, _ = M.roc_curve(y, scores)
    sk_fpr, sk_tpr, _ = sk.roc_curve(y, scores, drop_intermediate=False)
    assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr)
    three = rng.dirichlet(np.ones(3), 300)
    y3 = rng.integers(0, 3, 300)
    assert M.roc_auc_ovr(y3, three) == pytest.approx(sk.roc_auc_score(y3, three, multi_class="ovr", average="macro"))
    assert M.f1_per_class(y3, three.argmax(1), 3).mean() == pytest.approx(
        sk.f1_score(y3, three.argmax(1), average="macro")
    )


@pytest.mark.parametrize(
    "y_true, y_pred",
    [
        ([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 1, 0]),  # class 2 never predicted: its precision and F1 are 0
        ([0, 0, 0, 1], [0, 0, 0, 0]),  # class 1 never predicted
        ([0, 0, 0, 0], [0, 1, 0, 2]),  # classes 1 and 2 absent from the truth
        ([2, 2, 2], [2, 2, 2]),
    ],
)
def test_per_class_scores_equal_sklearn_where_a_ratio_is_undefined(y_true, y_pred):
    from sklearn import metrics as sk

    labels = [0, 1, 2]
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0.0
    )
    np.testing.assert_allclose(M.precision_per_class(y_true, y_pred, 3), precision)
    np.testing.assert_allclose(M.f1_per_class(y_true, y_pred, 3), f1)
    np.testing.assert_allclose(M.recall_per_class(y_true, y_pred, 3), np.where(support > 0, recall, np.nan))
    assert M.confusion_matrix(y_true, y_pred, 3).tolist() == sk.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    assert M.accuracy(y_true, y_pred) == sk.accuracy_score(y_true, y_pred)


@pytest.mark.parametrize("seed", [0, 1])
def test_ranks_and_softmax_equal_scipys(seed):
    from scipy.special import softmax
    from scipy.stats import rankdata

    from cxrlab.training.calibration import softmax as our_softmax

    rng = np.random.default_rng(seed)
    values = np.round(rng.random(500), 2)  # many ties
    np.testing.assert_array_equal(M.average_ranks(values), rankdata(values))
    np.testing.assert_array_equal(M.average_ranks(values.astype(np.float32)), rankdata(values.astype(np.float32)))
    assert np.isnan(M.average_ranks(np.r_[values, np.nan])).all() and np.isnan(M.roc_auc([0, 1], [0.2, np.nan]))
    logits = rng.normal(0, 30, (200, 3)).astype(np.float32)
    np.testing.assert_array_equal(our_softmax(logits), softmax(logits, axis=1))


def test_youden_threshold_maximises_j():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    scores = y * 0.4 + rng.random(400) * 0.7
    threshold = youden_threshold(y, scores)

    def j(t):
        pred = (scores >= t).astype(int)
        return M.sensitivity(y, pred) + M.specificity(y, pred) - 1

    assert j(threshold) == pytest.approx(max(j(t) for t in np.unique(scores)))


def test_cli_train_evaluate_predict(tmp_path, kermany_fixture):
    root = make_dataset_root(tmp_path / "data", n_train=30)
    runs = tmp_path / "runs"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxrlab",
            "train",
            "--data",
            str(root),
            "--model",
            "scratch_cnn",
            "--mode",
            "scratch",
            "--image-size",
            "32",
            "--epochs",
            "1",
            "--out",
            str(runs),
            "--name",
            "cli",
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    run_dir = runs / "cli"
    assert load_run(run_dir).finished
    evaluated = subprocess.run(
        [sys.executable, "-m", "cxrlab", "evaluate", str(run_dir), "--data", str(kermany_fixture), "--json"],
        capture_output=True,
        text=True,
    )
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["n_test"] == 6 and 0 <= result["test_accuracy"] <= 1
    assert list(run_dir.glob("eval-kermany-*.json"))
    predicted = subprocess.run(
        [sys.executable, "-m", "cxrlab", "predict", str(run_dir), str(kermany_fixture / "NORMAL")],
        capture_output=True,
        text=True,
    )
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.strip().splitlines()
    assert len(lines) == 3 and all("PNEUMONIA" in line and "NORMAL" in line for line in lines)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "resnet51", "--data", "{root}"], "unknown model 'resnet51'"),
        (["--model", "scratch_cnn", "--data", "{root}/missing"], "does not exist"),
        (["--model", "scratch_cnn", "--data", "{root}", "--lr", "-1"], "--lr"),
        (["--model", "scratch_cnn", "--data", "{root}", "--mode", "sideways"], "--mode"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, args, message):
    root = make_dataset_root(tmp_path / "data", n_train=6)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxrlab",
            "train",
            *[a.format(root=root) for a in args],
            "--out",
            str(tmp_path / "runs"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists() or list_runs(tmp_path / "runs") == []


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_optimisers_are_fused_on_the_cpu_and_step_as_torchs_default(optimizer):
    from cxrlab.training.optim import OPTIMIZERS, make_optimizer, parameter_groups
    from cxrlab.training.phases import plan_phases

    config = TrainConfig(data=".", model="scratch_cnn", mode="finetune", optimizer=optimizer).resolved()
    phase = next(p for p in plan_phases(config) if not p.head_only)
    models = [build_model("scratch_cnn", num_classes=2) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    fused = make_optimizer(config, models[0], phase)
    default = OPTIMIZERS[optimizer](parameter_groups(config, models[1], phase), phase.lr, config)
    assert all(group["fused"] for group in fused.param_groups)
    assert not any(group["fused"] for group in default.param_groups)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        for a, b in zip(models[0].parameters(), models[1].parameters()):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        fused.step()
        default.step()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
