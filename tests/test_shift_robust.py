"""Robust fine-tuning options: frozen BatchNorm statistics, a moving average of the weights,
WiSE-FT, and intensity augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cxrlab.data.transforms import (
    AUGMENT_LEVELS,
    INTENSITY_LEVELS,
    augment_batch,
    augment_training_batch,
    equalize_histogram,
    intensity_batch,
)
from cxrlab.models.registry import build_model
from cxrlab.models.weights import load_weights
from cxrlab.training.batchnorm import batchnorm_buffer_names, reestimate_bn_stats, sample_indices
from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import load_run
from cxrlab.training.robust import FINETUNED, PROBE, interpolate_weights, weight_average
from cxrlab.training.rundir import load_tensors

QUIET = dict(show_progress=False, log=lambda line: None)


def _config(root, tmp_path, **settings) -> TrainConfig:
    base = dict(
        data=str(root), model="efficientnet_lite0", image_size=32, batch_size=16, epochs=2, out=str(tmp_path / "runs")
    )
    base.update(settings)
    return TrainConfig(**base)


def _state(path):
    return load_tensors(path)["state_dict"]


def _pretrained() -> dict:
    model = build_model("efficientnet_lite0")
    load_weights(model, "efficientnet_lite0", "imagenet")
    return model.state_dict()


# Frozen BatchNorm statistics


def test_finetune_with_frozen_statistics_keeps_every_buffer_and_trains_the_affine(tiny_root, tmp_path):
    run_dir = fit(_config(tiny_root, tmp_path, mode="finetune", epochs=1, freeze_bn_stats=True), **QUIET)
    trained, reference = _state(run_dir / "model.pt"), _pretrained()
    buffers = batchnorm_buffer_names(build_model("efficientnet_lite0"))
    assert len(buffers) > 30
    for key in buffers:
        assert torch.equal(trained[key], reference[key]), key
    assert not torch.equal(trained["backbone.bn1.weight"], reference["backbone.bn1.weight"])  # affine still learns
    assert not torch.equal(trained["backbone.conv_stem.weight"], reference["backbone.conv_stem.weight"])


def test_frozen_statistics_and_wise_need_the_right_mode():
    with pytest.raises(ValueError, match="pretrained"):
        TrainConfig(data="d", model="scratch_cnn", mode="scratch", freeze_bn_stats=True)
    with pytest.raises(ValueError, match="gradual"):
        TrainConfig(data="d", model="efficientnet_lite0", mode="finetune", wise=True)
    with pytest.raises(ValueError, match="network phases"):
        TrainConfig(data="d", model="efficientnet_lite0", mode="frozen", ema=0.99)
    with pytest.raises(ValueError, match="feature-cache"):
        TrainConfig(data="d", model="efficientnet_lite0", mode="frozen", intensity="light")


# WiSE-FT


def test_interpolation_reproduces_both_ends_exactly():
    torch.manual_seed(0)
    probe, finetuned = build_model("scratch_cnn").state_dict(), build_model("scratch_cnn").state_dict()
    finetuned = {
        k: (v + torch.randn_like(v.float()).to(v.dtype) if v.is_floating_point() else v + 3)
        for k, v in finetuned.items()
    }
    for key in probe:  # the two ends differ everywhere, buffers too
        assert not torch.equal(probe[key], finetuned[key]), key
    start, end = interpolate_weights(probe, finetuned, 0.0), interpolate_weights(probe, finetuned, 1.0)
    assert all(torch.equal(start[k], probe[k]) for k in probe)
    assert all(torch.equal(end[k], finetuned[k]) for k in probe)
    middle = interpolate_weights(probe, finetuned, 0.3)
    key = "backbone.features.0.weight"
    assert torch.allclose(middle[key], 0.7 * probe[key] + 0.3 * finetuned[key], atol=1e-6)


def test_wise_mixes_the_probe_and_the_finetuned_weights(tiny_root, tmp_path):
    settings = dict(mode="gradual", head_epochs=2, epochs=2, wise=True, freeze_bn_stats=True, seed=1)
    run = load_run(fit(_config(tiny_root, tmp_path, **settings), **QUIET))
    curve = run.metrics.wise
    assert curve is not None and curve.alphas[0] == 0.0 and curve.alphas[-1] == 1.0 and len(curve.losses) == 11
    assert curve.chosen_on == "val"
    assert run.metrics.best_epoch == curve.finetuned_epoch >= 3  # head epochs are the probe, not candidates
    assert curve.losses[curve.alphas.index(curve.alpha)] == min(curve.losses)
    by_epoch = {row.epoch: row for row in run.epochs}
    # a = 0 is the end of the head phase (scored there on its cached features), a = 1 the selected epoch.
    assert curve.losses[0] == pytest.approx(by_epoch[2].val_loss, abs=1e-4)
    assert curve.losses[-1] == pytest.approx(by_epoch[curve.finetuned_epoch].val_loss, abs=1e-6)
    probe, finetuned, kept = (_state(run.path / name) for name in (PROBE, FINETUNED, "model.pt"))
    mixed = interpolate_weights(probe, finetuned, curve.alpha)
    assert all(torch.equal(kept[k], mixed[k]) for k in kept)
    reference = _pretrained()
    assert all(torch.equal(probe[k], reference[k]) for k in reference if k.startswith("backbone."))


# A moving average of the weights


def test_weight_average_follows_the_ramped_decay():
    model = torch.nn.Linear(3, 1)
    average = weight_average(model, decay=0.9)
    values = []
    for step in range(4):
        with torch.no_grad():
            model.weight.fill_(float(step))
        average.update_parameters(model)
        values.append(float(step))
    expected = values[0]  # the first update copies
    for n, value in enumerate(values[1:], start=1):
        decay = min(0.9, (1 + n) / (10 + n))
        expected = decay * expected + (1 - decay) * value
    assert average.module.weight.detach() == pytest.approx(torch.full((1, 3), expected), abs=1e-6)


def test_ema_selects_the_average_with_its_own_batchnorm_statistics(tiny_root, tmp_path):
    settings = dict(model="scratch_cnn", mode="scratch", epochs=2, lr=3e-3, seed=2)
    plain = load_run(fit(_config(tiny_root, tmp_path, name="plain", **settings), **QUIET))
    averaged = load_run(fit(_config(tiny_root, tmp_path, name="ema", ema=0.9, **settings), **QUIET))
    # Training is the same; what is validated and kept is not.
    assert [r.train_loss for r in averaged.epochs] == [r.train_loss for r in plain.epochs]
    assert [r.val_loss for r in averaged.epochs] != [r.val_loss for r in plain.epochs]
    kept = _state(averaged.path / "model.pt")
    # Its BatchNorm statistics are those of its own weights on the fixed sample of train images.
    model = build_model("scratch_cnn")
    model.load_state_dict(kept)
    from cxrlab.data.dataset import load_dataset

    data = load_dataset(str(tiny_root), 32, show_progress=False)
    reestimate_bn_stats(model, data.images, sample_indices(data.indices("train"), seed=2), torch.device("cpu"))
    recomputed = model.state_dict()
    for key in batchnorm_buffer_names(model):
        assert torch.allclose(recomputed[key].float(), kept[key].float(), atol=1e-5), key


def test_an_ema_run_resumes_to_the_same_weights(tiny_root, tmp_path):
    class Killed(KeyboardInterrupt):
        pass

    def die_after_first_epoch(line):
        if line.startswith("epoch   1"):
            raise Killed()

    settings = dict(model="scratch_cnn", mode="scratch", epochs=2, lr=3e-3, ema=0.8)
    whole = fit(_config(tiny_root, tmp_path, name="whole", **settings), **QUIET)
    with pytest.raises(Killed):
        fit(_config(tiny_root, tmp_path, name="killed", **settings), show_progress=False, log=die_after_first_epoch)
    resumed = fit(None, resume=tmp_path / "runs" / "killed", **QUIET)
    a, b = _state(whole / "model.pt"), _state(resumed / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


# Intensity augmentation


def test_intensity_augmentation_is_seeded_bounded_and_per_image():
    images = torch.rand(8, 1, 24, 24)
    first = intensity_batch(images, torch.Generator().manual_seed(5), **INTENSITY_LEVELS["strong"])
    again = intensity_batch(images, torch.Generator().manual_seed(5), **INTENSITY_LEVELS["strong"])
    assert torch.equal(first, again)
    assert first.min() >= 0 and first.max() <= 1 and not torch.allclose(first, images, atol=0.01)
    # The same image in every row still comes out differently: parameters are drawn per image.
    same = intensity_batch(images[:1].expand(8, -1, -1, -1), torch.Generator().manual_seed(5))
    assert (same - same[:1]).abs().flatten(1).amax(1)[1:].min() > 1e-3
    nothing = intensity_batch(images, torch.Generator(), 1.0, 0.0, 0.0, 0.0, 0.0)
    assert torch.allclose(nothing, images, atol=1e-5)


def test_equalized_images_have_flat_histograms():
    rng = np.random.default_rng(0)
    dark = torch.from_numpy(rng.beta(2, 8, (3, 1, 64, 64)).astype(np.float32))
    flat = equalize_histogram(dark)
    for image in flat:
        counts = np.histogram(image.numpy(), bins=4, range=(0, 1))[0]
        assert counts.min() > 0.15 * image.numel()  # each quarter of the range holds ~25% of pixels
    order = torch.argsort(dark[0].flatten())
    assert torch.all(torch.diff(flat[0].flatten()[order]) >= 0)  # monotone: brighter stays brighter


def test_training_augmentation_without_intensity_is_the_framing_one():
    images = torch.rand(4, 1, 16, 16)
    ours = augment_training_batch(images, torch.Generator().manual_seed(3), "light", "none")
    theirs = augment_batch(images, torch.Generator().manual_seed(3), **AUGMENT_LEVELS["light"])
    assert torch.equal(ours, theirs)
    assert math.isclose(
        float(augment_training_batch(images, torch.Generator(), "none", "none").sum()), float(images.sum())
    )
