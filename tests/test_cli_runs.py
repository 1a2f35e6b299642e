"""train --json, --patience, the cost said before a run, lr-find, data show, evaluate
--top-losses, predict --cam, --on-bad-image, --tta at the edge, and cxrlab's messages
through logging: on small synthetic data and the real fixture X-rays."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cxrlab
from cxrlab.core.errors import CxrlabError

SMALL = ["--model", "scratch_cnn", "--mode", "scratch", "--image-size", "32", "--batch-size", "16", "--quiet"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    from cxrlab.testing import make_dataset_root

    return make_dataset_root(tmp_path_factory.mktemp("cli-data"), n_train=40)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, data_root) -> cxrlab.Run:
    return cxrlab.train(
        data_root,
        "scratch_cnn",
        "scratch",
        epochs=2,
        image_size=32,
        batch_size=16,
        lr=2e-3,
        out=str(tmp_path_factory.mktemp("cli-runs")),
        name="finished",
        show_progress=False,
    )


def one_line_error(result, *words: str) -> None:
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    for word in words:
        assert word in lines[0], lines[0]


def test_train_json_gives_the_run_and_its_headline(cli, data_root, tmp_path):
    result = cli("train", "--data", str(data_root), *SMALL, "--epochs", "1", "--out", str(tmp_path), "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    run = cxrlab.load_run(report["run_dir"])
    assert report["status"] == "finished"
    assert report["metrics"]["test_accuracy"] == run.metrics.test_accuracy
    assert set(report["metrics"]) >= {"roc_auc", "test_loss", "best_epoch", "train_seconds", "threshold"}


def test_patience_ends_the_phase_where_the_hook_says(cli, data_root, tmp_path, monkeypatch):
    from cxrlab.training import phase_loop

    # Every epoch counts as one without improvement: patience 2 must stop after epoch 2 of 6.
    monkeypatch.setattr(phase_loop, "stalled_epochs", lambda losses: len(losses))
    result = cli("train", "--data", str(data_root), *SMALL, "--epochs", "6", "--patience", "2", "--out", str(tmp_path))
    assert result.code == 0, result.err
    run = cxrlab.load_run(result.out.strip())
    assert [row.epoch for row in run.epochs] == [1, 2]
    assert run.metrics.epochs_run == 2 and run.config.patience == 2
    assert "early stop: no lower validation loss for 2 epochs of the network phase" in result.err


def test_stalled_epochs_counts_from_the_lowest_loss():
    from cxrlab.training.early_stop import stalled_epochs

    assert stalled_epochs([]) == 0
    assert stalled_epochs([0.9, 0.8, 0.7]) == 0
    assert stalled_epochs([0.9, 0.5, 0.6, 0.7]) == 2
    assert stalled_epochs([0.5, 0.5]) == 1  # a tie is no improvement


def test_the_cost_is_said_before_a_run(data_root, caplog):
    """A run long enough to matter hears its time from batches timed on this machine."""
    from cxrlab.api import _say_cost, train_config

    config = train_config(data_root, "scratch_cnn", "scratch", epochs=100_000, image_size=32, batch_size=8)
    with caplog.at_level(logging.INFO, logger="cxrlab"):
        _say_cost(config, show_progress=False)
    [line] = [r.getMessage() for r in caplog.records if "timed" in r.getMessage()]
    assert line.startswith("scratch_cnn scratch: 100000 epochs at 32 px over ") and "about " in line
    assert "make it shorter" in line  # 100000 epochs are long anywhere


def test_estimate_scales_with_the_run(data_root):
    from cxrlab.data.dataset import load_dataset
    from cxrlab.training.config import TrainConfig
    from cxrlab.training.estimate import estimate_run

    data = load_dataset(str(data_root), 32)
    short = TrainConfig(data=str(data_root), model="scratch_cnn", mode="scratch", epochs=1, image_size=32)
    assert estimate_run(short.resolved(), data) is None  # too short to be worth timing
    long = short.model_copy(update={"epochs": 200, "batch_size": 4}).resolved()
    estimate = estimate_run(long, data)
    assert estimate is not None and estimate.epochs == 200 and estimate.n_train == data.count("train")
    per_epoch = estimate.step_seconds * (data.count("train") // 4)
    assert estimate.seconds >= 200 * per_epoch > 0


def test_a_frozen_run_is_timed_by_its_one_pass_over_the_images(data_root, monkeypatch):
    """A frozen run's head epochs train on features computed once: 200 of them are no reason
    to time batches, while the images of one pass can be."""
    from cxrlab.data.dataset import load_dataset
    from cxrlab.training import estimate as estimate_module
    from cxrlab.training.config import TrainConfig

    monkeypatch.setattr(estimate_module, "WORTH_TIMING", 20)
    data = load_dataset(str(data_root), 32)
    n_images = data.count("train") + data.count("val") + data.count("test")
    assert n_images * estimate_module.INFERENCE_STEP_SHARE >= 20 > n_images * estimate_module.INFERENCE_STEP_SHARE / 4
    frozen = TrainConfig(data=str(data_root), model="scratch_cnn", mode="frozen", epochs=200, image_size=32)
    assert estimate_module.estimate_run(frozen.model_copy(update={"batch_size": 4}).resolved(), data) is None
    timed = estimate_module.estimate_run(frozen.model_copy(update={"batch_size": 1}).resolved(), data)
    assert timed is not None and timed.step_seconds == 0 and timed.image_seconds > 0
    finetune = frozen.model_copy(update={"mode": "finetune", "batch_size": 4}).resolved()
    assert estimate_module.estimate_run(finetune, data) is not None  # its 200 epochs all train the network


def test_messages_go_through_the_cxrlab_logger(data_root, tmp_path, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="cxrlab"):
        cxrlab.train(
            data_root, "scratch_cnn", "scratch", epochs=1, image_size=32, out=str(tmp_path), show_progress=False
        )
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("cxrlab")]
    assert any(line.startswith("epoch   1 network") for line in lines)
    assert any("test accuracy" in line for line in lines)
    # Silenced by the caller: nothing of cxrlab's reaches stderr.
    logging.getLogger("cxrlab").setLevel(logging.WARNING)
    try:
        capsys.readouterr()
        cxrlab.train(
            data_root, "scratch_cnn", "scratch", epochs=1, image_size=32, out=str(tmp_path), show_progress=False
        )
        assert "epoch" not in capsys.readouterr().err
    finally:
        logging.getLogger("cxrlab").setLevel(logging.NOTSET)


def test_lr_find_plots_and_suggests(cli, data_root, tmp_path):
    plot = tmp_path / "lr.png"
    args = ["lr-find", "--data", str(data_root), *SMALL, "--steps", "8", "--plot", str(plot), "--json"]
    result = cli(*args)
    assert result.code == 0, result.err
    report = json.loads(result.out)
    lrs = report["lrs"]
    assert 5 <= len(lrs) <= 8 and lrs == sorted(lrs) and lrs[0] == pytest.approx(1e-7)
    assert lrs[0] <= report["suggested_lr"] <= lrs[-1]
    assert Image.open(plot).size[0] >= 500
    assert not (tmp_path / "runs").exists()  # it writes no run


def test_lr_find_api_and_its_figure(data_root):
    finding = cxrlab.lr_find(
        data_root, "scratch_cnn", "scratch", steps=6, image_size=32, batch_size=16, show_progress=False
    )
    figure = finding.plot()
    axes = figure.axes[0]
    assert axes.get_xscale() == "log" and "suggested lr" in " ".join(t.get_text() for t in axes.get_legend().texts)
    with pytest.raises(CxrlabError, match="start-lr"):
        cxrlab.lr_find(data_root, "scratch_cnn", start_lr=1.0, end_lr=0.1)


def test_valley_suggests_a_rate_on_the_way_down():
    from cxrlab.training.lr_find import lr_schedule, valley

    lrs = list(lr_schedule(1e-6, 1.0, 61))
    losses = [1.0] * 20 + list(np.linspace(1.0, 0.2, 30)) + list(np.linspace(0.3, 3.0, 11))
    suggestion = valley(lrs, losses)
    assert lrs[20] < suggestion < lrs[49]


def test_data_show_draws_every_split_and_class(cli, data_root, tmp_path):
    from cxrlab.data.dataset import load_dataset
    from cxrlab.report.grids import data_grid_figure

    out = tmp_path / "grid.png"
    result = cli("data", "show", str(data_root), "--out", str(out), "--per-class", "3", "--image-size", "32")
    assert result.code == 0 and out.exists(), result.err
    data = load_dataset(str(data_root), 32)
    figure = data_grid_figure(data, per_class=3)
    titles = [a.get_title() for a in figure.axes if a.get_title()]
    assert len(figure.axes) == 3 * 2 * 3  # splits x classes x per class
    for split in ("train", "val", "test"):
        for name in data.classes:
            assert sum(t.startswith(f"{name} · {split}") for t in titles) == 3
    plain = figure.axes[0].get_images()[0].get_array()
    augmented = data_grid_figure(data, per_class=3, augment="strong").axes[0].get_images()[0].get_array()
    assert not np.array_equal(plain, augmented)
    one_line_error(cli("data", "show", str(data_root), "--out", str(tmp_path)), "--out", "folder")


@pytest.fixture
def corrupt_image(tmp_path) -> Path:
    path = tmp_path / "broken.jpeg"
    path.write_bytes(b"\xff\xd8\xff not really a jpeg")
    return path


def test_predict_on_bad_image(cli, finished, data_root, corrupt_image):
    good = next((data_root / "train" / "NORMAL").iterdir())
    stopped = cli("predict", str(finished.path), str(good), str(corrupt_image))
    one_line_error(stopped, str(corrupt_image), "--on-bad-image skip")
    skipped = cli("predict", str(finished.path), str(good), str(corrupt_image), "--on-bad-image", "skip")
    assert skipped.code == 0 and str(good) in skipped.out and str(corrupt_image) not in skipped.out
    assert f"warning: skipped {corrupt_image}" in skipped.err


def test_evaluate_on_bad_image(cli, finished, tmp_path, corrupt_image):
    from cxrlab.testing import make_class_folders

    folder = make_class_folders(tmp_path / "other", {"NORMAL": 4, "PNEUMONIA": 4}, seed=5, size=32)
    (folder / "NORMAL" / "IM-9999-0001.jpeg").write_bytes(corrupt_image.read_bytes())
    one_line_error(cli("evaluate", str(finished.path), "--data", str(folder)), "--on-bad-image skip")
    result = cli("evaluate", str(finished.path), "--data", str(folder), "--on-bad-image", "skip", "--json")
    assert result.code == 0, result.err
    assert json.loads(result.out)["n_test"] == 8 and json.loads(result.out)["skipped_images"] == 1


@pytest.mark.parametrize("tta", [-1, 65])
def test_tta_out_of_range_is_refused_before_any_score(finished, data_root, tta):
    before = sorted(finished.path.glob("eval-*"))
    with pytest.raises(CxrlabError, match="--tta"):
        finished.predict(next((data_root / "train" / "NORMAL").iterdir()), tta=tta)
    with pytest.raises(CxrlabError, match="--tta"):
        finished.evaluate(data_root, tta=tta)
    assert sorted(finished.path.glob("eval-*")) == before


def test_evaluate_top_losses(cli, finished, data_root, tmp_path):
    out = tmp_path / "looks"
    result = cli("evaluate", str(finished.path), "--data", str(data_root), "--top-losses", "4", "--out", str(out))
    assert result.code == 0, result.err
    assert (out / "confusion.png").exists()
    looks = finished.interpret(data_root)
    mistakes = looks.top_losses(4)
    assert all(m["true"] != m["predicted"] for m in mistakes)
    assert [m["probability"] for m in mistakes] == sorted((m["probability"] for m in mistakes), reverse=True)
    figure = looks.plot_top_losses(4)
    if mistakes:
        assert (out / "top-losses.png").exists()
        assert len([a for a in figure.axes if a.get_images()]) == len(mistakes)
    confusion = looks.plot_confusion()
    assert sum(int(t.get_text().split("\n")[0]) for t in confusion.axes[0].texts) == len(looks.scored.labels)
    one_line_error(cli("evaluate", str(finished.path), "--data", str(data_root), "--top-losses", "3"), "--out")


def test_predict_cam_figures_have_a_colour_bar_and_a_caption(cli, finished, data_root, tmp_path):
    from cxrlab.report.grids import cam_figures

    images = [next((data_root / "train" / c).iterdir()) for c in ("NORMAL", "PNEUMONIA")]
    out = tmp_path / "cams"
    result = cli("predict", str(finished.path), *map(str, images), "--cam", str(out))
    assert result.code == 0, result.err
    written = sorted(out.glob("*-gradcam-*.png"))
    assert len(written) == 2
    for _, name, figure in cam_figures(finished, images):
        image_axes, bar = figure.axes
        caption = image_axes.get_xlabel()
        assert f"predicted {name}: p(PNEUMONIA)" in caption and "threshold" in caption
        assert "Grad-CAM weight" in bar.get_ylabel()
        # scratch_cnn at 32 px ends in a map of a few cells: the figure says it cannot be read.
        assert "too coarse" in caption


def test_coarse_note_only_when_it_is_coarse():
    from cxrlab.report.grids import coarse_note

    heat = np.full((8, 8), 0.5)
    assert coarse_note((7, 7), 224, heat) is None
    assert "1x1 cells at 32 px" in coarse_note((1, 1), 32, heat)
    assert "flat map" in coarse_note((7, 7), 224, np.zeros((8, 8)))


def test_compare_json_and_no_links_without_out(cli, finished):
    result = cli("compare", str(finished.path), "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["runs"][0]["path"] == str(finished.path) and report["figures"] == []
    markdown = cli("compare", str(finished.path))
    assert markdown.code == 0 and "![" not in markdown.out and ".png" not in markdown.out


def test_timm_weights_offline_fail_fast_with_the_file_to_place(cli, data_root, tmp_path, monkeypatch):
    import time

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    tick = time.perf_counter()
    args = ["--model", "timm:resnet18", "--weights", "imagenet", "--image-size", "32", "--out", str(tmp_path)]
    result = cli("train", "--data", str(data_root), *args)
    one_line_error(result, "timm-resnet18.safetensors", "huggingface.co/timm/resnet18")
    assert time.perf_counter() - tick < 30
    assert not list(tmp_path.iterdir())


def test_a_placed_timm_weights_file_is_used(tmp_path):
    import timm
    import torch
    from safetensors.torch import save_file

    from cxrlab.models.registry import build_model, model_entry
    from cxrlab.models.weights import load_weights, pretrained_available, timm_weights_file

    entry = model_entry("timm:resnet18")
    placed = timm_weights_file(entry)
    reference = timm.create_model("resnet18", pretrained=False)
    placed.parent.mkdir(parents=True, exist_ok=True)
    save_file(reference.state_dict(), str(placed))
    try:
        assert pretrained_available("timm:resnet18")
        model = build_model("timm:resnet18", num_classes=2)
        assert load_weights(model, "timm:resnet18", "imagenet") == "imagenet:timm:resnet18"
        key = "conv1.weight"
        assert torch.equal(model.backbone.state_dict()[key], reference.state_dict()[key])
    finally:
        placed.unlink()
