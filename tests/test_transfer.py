"""Freeze depth, data-size subsets and convergence, through real training runs on tiny data."""

from __future__ import annotations

import csv
import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from cxrlab.core.errors import CxrlabError
from cxrlab.data.dataset import load_dataset
from cxrlab.data.splits import linked_groups
from cxrlab.data.subsets import UNUSED, keep_train_fraction, nested_subset
from cxrlab.models.registry import backbone_stages, build_model
from cxrlab.training.config import TrainConfig
from cxrlab.training.convergence import convergence
from cxrlab.training.loop import fit
from cxrlab.training.records import EpochRecord, load_run


def _config(root, out, **overrides) -> TrainConfig:
    settings = dict(
        data=str(root),
        model="scratch_cnn",
        mode="finetune",
        epochs=2,
        image_size=32,
        batch_size=8,
        out=str(out),
        deterministic=True,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


def _weights_file(tmp_path) -> Path:
    torch.manual_seed(11)
    path = tmp_path / "start.pt"
    torch.save(build_model("scratch_cnn").backbone.state_dict(), path)
    return path


def _trained(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)["state_dict"]


def _bottom_keys(k: int) -> set[str]:
    model = build_model("scratch_cnn")
    owned = {id(t) for m in backbone_stages(model, "scratch_cnn").bottom(k) for t in [*m.parameters(), *m.buffers()]}
    return {f"backbone.{name}" for name, t in model.backbone.state_dict(keep_vars=True).items() if id(t) in owned}


@pytest.mark.parametrize("augment", ["light", "none"])
def test_frozen_stages_keep_parameters_and_batchnorm_buffers_bit_identical(tiny_root, tmp_path, augment):
    start = _weights_file(tmp_path)
    initial = torch.load(start, weights_only=True)
    run_dir = fit(
        _config(tiny_root, tmp_path, weights=str(start), freeze_blocks=2, augment=augment), show_progress=False
    )
    trained = _trained(run_dir)
    frozen = _bottom_keys(2)
    assert any("running_mean" in k for k in frozen) and any("num_batches_tracked" in k for k in frozen)
    for key, value in trained.items():
        if not key.startswith("backbone."):
            continue
        before = initial[key.removeprefix("backbone.")]
        if key in frozen:
            assert torch.equal(value, before), f"{key} moved although frozen"
        elif value.is_floating_point() and "running" not in key:
            assert not torch.equal(value, before), f"{key} did not train"
    metrics = load_run(run_dir).scores
    everything = sum(p.numel() for p in build_model("scratch_cnn").parameters())
    assert metrics.init == "file" and metrics.stages == 4 and 0 < metrics.trainable_params < everything


def test_cached_and_uncached_freeze_depth_train_the_same_head_and_top(tiny_root, tmp_path):
    start = _weights_file(tmp_path)
    cache = tmp_path / "cache"
    common = dict(weights=str(start), freeze_blocks=2, augment="none", cache_dir=str(cache), epochs=3)
    cached = fit(_config(tiny_root, tmp_path / "a", **common), show_progress=False)
    files = sorted((cache / "activations").glob("*.npy"))
    assert len(files) == 3  # train, val and test, computed once
    uncached = fit(_config(tiny_root, tmp_path / "b", feature_cache=False, **common), show_progress=False)
    assert sorted((cache / "activations").glob("*.npy")) == files
    a, b = _trained(cached), _trained(uncached)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    rows_a, rows_b = load_run(cached).epochs, load_run(uncached).epochs
    assert [r.train_loss for r in rows_a] == pytest.approx([r.train_loss for r in rows_b], abs=1e-4)
    assert [r.val_loss for r in rows_a] == pytest.approx([r.val_loss for r in rows_b], abs=1e-4)
    # The cached run counts computing the activations in its training time.
    seconds = load_run(cached).scores.train_seconds
    assert seconds > sum(r.seconds for r in rows_a)
    # A second cached run finds them (same key) and still counts what they cost.
    again = fit(_config(tiny_root, tmp_path / "c", **common), show_progress=False)
    assert sorted((cache / "activations").glob("*.npy")) == files
    assert load_run(again).scores.train_seconds > sum(r.seconds for r in load_run(again).epochs)


def test_a_damaged_activation_cache_is_recomputed(tiny_root, tmp_path):
    cache = tmp_path / "cache"
    config = _config(tiny_root, tmp_path, freeze_blocks=1, augment="none", cache_dir=str(cache), epochs=1, seed=2)
    first = load_run(fit(config, show_progress=False)).epochs[0].train_loss
    for path in (cache / "activations").glob("*.npy"):
        with open(path, "r+b") as f:
            f.seek(-64, os.SEEK_END)
            f.write(b"\xff" * 64)
    second = load_run(fit(config, show_progress=False)).epochs[0].train_loss
    assert second == first


def test_freeze_and_transfer_depths_are_checked_before_anything_is_written(tiny_root, tmp_path):
    with pytest.raises(ValidationError, match="freeze_blocks applies to finetune mode only"):
        _config(tiny_root, tmp_path, mode="frozen", freeze_blocks=1)
    with pytest.raises(ValidationError, match="transfer_blocks applies to finetune mode only"):
        _config(tiny_root, tmp_path, mode="scratch", transfer_blocks=1)
    with pytest.raises(CxrlabError, match=r"--freeze-blocks 5: scratch_cnn has 4 stages"):
        fit(_config(tiny_root, tmp_path / "runs", freeze_blocks=5), show_progress=False)
    assert not (tmp_path / "runs").exists()


def test_partial_transfer_and_stats_runs_record_their_init(tiny_root, tmp_path):
    start = _weights_file(tmp_path)
    partial = fit(_config(tiny_root, tmp_path, weights=str(start), transfer_blocks=1, epochs=1), show_progress=False)
    stats = fit(_config(tiny_root, tmp_path, weights=f"{start}-stats", epochs=1), show_progress=False)
    run = load_run(partial)
    assert run.scores.init == "partial" and run.config.transfer_blocks == 1 and "|transfer-1-" in run.config.weights_id
    assert load_run(stats).scores.init == "stats" and "|stats-seed-0" in load_run(stats).config.weights_id


# --- data-size subsets ---------------------------------------------------------------------------


def _patients(rng, n_patients=120):
    """Images of patients with 1-4 images each, ~30% of patients in class 1."""
    sizes = rng.integers(1, 5, n_patients)
    groups = np.repeat(np.arange(n_patients), sizes)
    labels = np.repeat((rng.random(n_patients) < 0.3).astype(np.int64), sizes)
    return labels, groups


def test_subsets_are_nested_stratified_and_patient_grouped():
    labels, groups = _patients(np.random.default_rng(0))
    fractions = [0.05, 0.1, 0.25, 0.5, 1.0]
    masks = [nested_subset(labels, groups, f, seed=4) for f in fractions]
    for smaller, larger in itertools.pairwise(masks):
        assert (smaller <= larger).all() and smaller.sum() < larger.sum()
    assert masks[-1].all()
    for fraction, mask in zip(fractions, masks):
        for group in np.unique(groups):
            assert len(set(mask[groups == group])) == 1, "a patient split across the subset"
        for c in (0, 1):
            in_class = labels == c
            share = mask[in_class].sum() / in_class.sum()
            # At least the fraction, over by less than one patient's images (4 at most).
            assert fraction - 1e-9 <= share <= fraction + 4 / in_class.sum(), (fraction, c, share)
    # Another seed draws other patients; the same seed the same ones.
    assert not (nested_subset(labels, groups, 0.25, seed=5) == masks[2]).all()
    assert (nested_subset(labels, groups, 0.25, seed=4) == masks[2]).all()


def test_train_fraction_keeps_validation_and_test_and_nests_the_training_images(tiny_root, tmp_path):
    data = load_dataset(str(tiny_root), 32, show_progress=False)
    half, quarter = keep_train_fraction(data, 0.5, seed=0), keep_train_fraction(data, 0.25, seed=0)
    for subset in (half, quarter):
        for split in ("val", "test"):
            assert (subset.indices(split) == data.indices(split)).all()
    assert set(quarter.indices("train")) < set(half.indices("train")) < set(data.indices("train"))
    assert set(np.unique(half.splits)) == {"train", "val", "test", UNUSED}
    groups = linked_groups(half.patients, half.digests)
    for group in np.unique(groups):
        assert (
            len({half.splits[i] == "train" for i in np.flatnonzero(groups == group) if data.splits[i] == "train"}) <= 1
        )
    run = load_run(fit(_config(tiny_root, tmp_path, train_fraction=0.5, epochs=1), show_progress=False))
    assert run.scores.n_train == half.count("train") and run.config.train_fraction == 0.5
    with open(run.path / "split.csv") as f:
        assert sum(row["split"] == UNUSED for row in csv.DictReader(f)) == half.count(UNUSED)


# --- convergence ---------------------------------------------------------------------------------


def _row(epoch, val_loss, val_auc, seconds=10.0):
    return EpochRecord(
        epoch=epoch,
        phase="network",
        train_loss=0.5,
        train_acc=0.8,
        val_loss=val_loss,
        val_acc=0.8,
        lr=1e-3,
        seconds=seconds,
        val_auc=val_auc,
    )


def test_convergence_is_the_first_epoch_within_tolerance_of_the_best():
    history = [_row(1, 0.9, 0.80), _row(2, 0.52, 0.944), _row(3, 0.50, 0.95), _row(4, 0.6, 0.946)]
    result = convergence(history, feature_seconds=5.0)
    # 0.52 <= 1.05 * 0.50; AUC 0.944 is 0.006 below the best 0.95 (epoch 3), so epoch 2 is not within 0.005.
    assert result == {
        "converged_epoch": 2,
        "converged_seconds": 25.0,
        "converged_auc_epoch": 3,
        "converged_auc_seconds": 35.0,
    }
    assert convergence([_row(1, 0.4, None)])["converged_auc_epoch"] is None
    assert convergence([])["converged_epoch"] is None


def test_runs_record_validation_auc_per_epoch_and_their_convergence(tiny_root, tmp_path):
    run = load_run(fit(_config(tiny_root, tmp_path, epochs=3), show_progress=False))
    with open(run.path / "history.csv") as f:
        assert next(csv.reader(f))[-1] == "val_auc"
    assert all(0 <= row.val_auc <= 1 for row in run.epochs)
    metrics = run.scores
    expected = convergence(run.epochs)
    assert metrics.converged_epoch == expected["converged_epoch"] and 1 <= metrics.converged_epoch <= 3
    assert metrics.converged_auc_epoch == expected["converged_auc_epoch"]
    assert metrics.converged_seconds == pytest.approx(expected["converged_seconds"], abs=1e-3)
    assert metrics.init == "random" and metrics.stages == 4


def test_convergence_figure_draws_every_run_against_its_training_seconds(tiny_root, tmp_path):
    from cxrlab.evaluate.layer_figures import convergence_figure, save_png

    runs = [
        load_run(fit(_config(tiny_root, tmp_path, mode=mode, epochs=2), show_progress=False))
        for mode in ("finetune", "frozen")
    ]
    figure = convergence_figure(runs)
    lines = [line for line in figure.axes[0].get_lines() if len(line.get_xdata()) == 2]
    assert len(lines) == 2
    frozen = next(line for line, run in zip(lines, runs) if run.config.mode == "frozen")
    # The frozen run's curve starts after its features were computed.
    first_epoch = runs[1].epochs[0].seconds
    assert frozen.get_xdata()[0] == pytest.approx(runs[1].scores.train_seconds - runs[1].epochs[1].seconds, abs=1e-2)
    assert frozen.get_xdata()[0] >= first_epoch
    assert save_png(figure, tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"
