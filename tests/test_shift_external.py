"""External sets are scored once, after selection, and never choose; a labelled target sample
chooses and is labelled a validation set."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from cxrlab.core.decision import choose_threshold
from cxrlab.core.errors import CxrlabError
from cxrlab.testing import make_class_folders, make_dataset_root
from cxrlab.training.calibration import fit_temperature, probabilities
from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import load_run
from cxrlab.training.rundir import load_tensors


def _config(root, out, **settings) -> TrainConfig:
    base = dict(
        data=str(root),
        model="scratch_cnn",
        mode="scratch",
        image_size=32,
        batch_size=16,
        epochs=4,
        lr=3e-3,
        out=str(out),
    )
    base.update(settings)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Three runs of one setting: plain; with an external set whose labels are the opposite
    of what its images show (used to choose, it would pick another epoch and threshold); and
    with that set as the labelled target sample that chooses (the control)."""
    base = tmp_path_factory.mktemp("planted")
    root = make_dataset_root(base / "data", n_train=40)
    made = make_class_folders(base / "made", {"NORMAL": 16, "PNEUMONIA": 16}, seed=11, start=8000)
    flipped = base / "flipped"
    flipped.mkdir()
    shutil.move(made / "NORMAL", flipped / "PNEUMONIA")
    shutil.move(made / "PNEUMONIA", flipped / "NORMAL")
    quiet = dict(show_progress=False, log=lambda line: None)
    out = base / "runs"
    runs = {
        "plain": fit(_config(root, out, name="plain"), **quiet),
        "external": fit(_config(root, out, name="external", external={"planted": str(flipped)}), **quiet),
        "chooser": fit(_config(root, out, name="chooser", target_val=str(flipped)), **quiet),
    }
    return {name: load_run(path) for name, path in runs.items()}, flipped


def test_a_planted_external_set_changes_no_choice(planted):
    runs, flipped = planted
    plain, external = runs["plain"], runs["external"]
    assert external.metrics.best_epoch == plain.metrics.best_epoch
    assert external.metrics.threshold == plain.metrics.threshold
    assert external.metrics.test_accuracy == plain.metrics.test_accuracy
    assert external.metrics.selection_set == "val" and external.metrics.temperature is None
    assert [r.val_loss for r in external.epochs] == [r.val_loss for r in plain.epochs]
    assert all(r.target_val_loss is None for r in external.epochs)  # never looked at while training
    a, b = load_tensors(plain.path / "model.pt")["state_dict"], load_tensors(external.path / "model.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    scores = external.metrics.external["planted"]
    assert scores.role == "test" and scores.n == 32 and scores.location == str(flipped)
    assert scores.threshold == plain.metrics.threshold
    # Scored once, at the run's threshold: the recorded numbers are those of the recorded rows.
    paths, labels, probs = external.prediction_arrays("external:planted")
    assert len(paths) == len(set(paths)) == 32
    predicted = (probs[:, 1] >= external.metrics.threshold).astype(int)
    assert scores.accuracy == pytest.approx(float((predicted == labels).mean()))
    assert external.prediction_arrays("test")[0] == plain.prediction_arrays("test")[0]


def test_the_planted_labels_would_have_changed_the_choice(planted):
    """The control: the same set as the sample that chooses moves the epoch or the threshold,
    so the test above could fail."""
    runs, _ = planted
    plain, chooser = runs["plain"], runs["chooser"]
    assert (chooser.metrics.best_epoch, chooser.metrics.threshold) != (
        plain.metrics.best_epoch,
        plain.metrics.threshold,
    )


def test_the_target_sample_chooses_and_is_labelled_validation(planted):
    runs, flipped = planted
    run = runs["chooser"]
    metrics = run.metrics
    assert metrics.selection_set == "external:target_val"
    assert metrics.external["target_val"].role == "validation"
    assert metrics.external["target_val"].location == str(flipped)
    losses = [r.target_val_loss for r in run.epochs]
    assert None not in losses and metrics.best_epoch == int(np.argmin(losses)) + 1
    # Temperature and threshold come from the target sample's rows, as recorded.
    _, labels, probs = run.prediction_arrays("external:target_val")
    assert metrics.temperature is not None
    assert choose_threshold("val-youden", labels, probs, 1) == pytest.approx(metrics.threshold, abs=1e-5)


def test_external_set_and_target_sample_may_be_the_same_folder(tmp_path):
    root = make_dataset_root(tmp_path / "data", n_train=30)
    target = make_class_folders(tmp_path / "target", {"NORMAL": 8, "PNEUMONIA": 8}, seed=3, start=9000)
    config = _config(root, tmp_path / "runs", epochs=1, external={"site": str(target)}, target_val=str(target))
    run = load_run(fit(config, show_progress=False, log=lambda line: None))
    assert list(run.metrics.external) == ["site"]
    assert run.metrics.external["site"].role == "validation"
    assert run.metrics.selection_set == "external:site"


def test_a_missing_external_set_fails_before_anything_is_written(tmp_path):
    root = make_dataset_root(tmp_path / "data", n_train=20)
    config = _config(root, tmp_path / "runs", external={"site": str(tmp_path / "nowhere")})
    with pytest.raises(CxrlabError, match="does not exist"):
        fit(config, show_progress=False, log=lambda line: None)
    assert not (tmp_path / "runs").exists()


def test_an_external_set_with_an_unknown_class_is_refused(tmp_path):
    root = make_dataset_root(tmp_path / "data", n_train=20)
    other = make_class_folders(tmp_path / "other", {"NORMAL": 4, "COVID": 4}, seed=2)
    with pytest.raises(CxrlabError, match="COVID, which the run never learned"):
        fit(_config(root, tmp_path / "runs", external={"site": str(other)}), show_progress=False)


def test_temperature_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (20_000, 2))
    labels = (rng.random(20_000) < probabilities(logits, 2.0)[:, 1]).astype(np.int64)
    assert fit_temperature(logits, labels) == pytest.approx(2.0, rel=0.05)
