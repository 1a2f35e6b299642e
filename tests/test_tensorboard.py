"""--tensorboard: the event file holds the epoch scalars, the HParams session and example images."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import load_run


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    from cxrlab.testing import make_dataset_root

    root = make_dataset_root(tmp_path_factory.mktemp("tb-data"), n_train=40)
    out = tmp_path_factory.mktemp("tb-runs")
    run_dir = fit(
        TrainConfig(
            data=str(root),
            model="scratch_cnn",
            mode="scratch",
            epochs=2,
            image_size=32,
            batch_size=16,
            lr=2e-3,
            tensorboard=True,
            out=str(out),
            name="tb",
        ),
        show_progress=False,
        log=lambda line: None,
    )
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    events.Reload()
    return load_run(run_dir), events


def test_epoch_scalars_match_history(logged_run):
    run, events = logged_run
    tags = events.Tags()["scalars"]
    for tag in ("loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr", "seconds"):
        assert tag in tags
    val_loss = events.Scalars("loss/val")
    assert [e.step for e in val_loss] == [1, 2]
    for event, row in zip(val_loss, run.epochs):
        assert event.value == pytest.approx(row.val_loss, abs=1e-5)
    for event, row in zip(events.Scalars("accuracy/train"), run.epochs):
        assert event.value == pytest.approx(row.train_acc, abs=1e-5)
    assert events.Scalars("lr")[-1].value == pytest.approx(run.epochs[-1].lr, rel=1e-3)


def test_hparams_hold_settings_and_final_metrics(logged_run):
    run, events = logged_run
    content = events.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model"].string_value == "scratch_cnn"
    assert start.hparams["mode"].string_value == "scratch"
    assert start.hparams["lr"].number_value == pytest.approx(2e-3)
    assert start.hparams["epochs"].number_value == 2
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    metric_tags = {m.name.tag for m in experiment.metric_infos}
    assert {"final/test_accuracy", "final/test_loss", "final/roc_auc"} <= metric_tags
    # The metrics the HParams view shows are scalars of the same run, equal to metrics.json.
    assert events.Scalars("final/test_accuracy")[0].value == pytest.approx(run.metrics.test_accuracy, abs=1e-6)
    assert events.Scalars("final/test_loss")[0].value == pytest.approx(run.metrics.test_loss, rel=1e-5)


def test_example_images_per_split_and_class(logged_run):
    _run, events = logged_run
    tags = set(events.Tags()["images"])
    for split in ("train", "val", "test"):
        assert any(tag.startswith(f"examples/{split}/") for tag in tags), tags
    image = events.Images("examples/train/PNEUMONIA")[0]
    # A grid of the examples, each image at the run's size (32 px) plus grid padding.
    assert image.height >= 32 and image.width >= 32
    assert image.encoded_image_string[:4] == b"\x89PNG"


def test_without_the_flag_nothing_is_logged(tiny_root, tmp_path):
    run_dir = fit(
        TrainConfig(
            data=str(tiny_root),
            model="scratch_cnn",
            mode="scratch",
            epochs=1,
            image_size=32,
            batch_size=16,
            out=str(tmp_path / "runs"),
        ),
        show_progress=False,
        log=lambda line: None,
    )
    assert not (run_dir / "tensorboard").exists()
