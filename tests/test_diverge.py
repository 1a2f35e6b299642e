"""Diverging runs: a non-finite loss stops the run at that step, records it, keeps what was good.

A learning rate of 1e6 with plain SGD sends the loss to inf/nan within a few steps. The
run is a result, not a crash: status.json says ``diverged`` with the epoch and the step,
the checkpoint of the best earlier epoch stays, and the command line prints one line that
says so, suggests a lower learning rate, and exits with code 1.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

from cxrlab.cli import main
from cxrlab.core.errors import CxrlabError
from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import list_runs, load_run, read_csv


def diverging(tiny_root, out, **extra) -> TrainConfig:
    settings = dict(
        data=str(tiny_root),
        model="scratch_cnn",
        mode="scratch",
        optimizer="sgd",
        lr=1e6,
        warmup=0.0,
        epochs=3,
        image_size=32,
        batch_size=16,
        out=str(out),
    )
    settings.update(extra)
    return TrainConfig(**settings)


def test_first_epoch_divergence_stops_at_the_step(tiny_root, tmp_path):
    lines: list[str] = []
    run_dir = fit(diverging(tiny_root, tmp_path / "runs", name="first"), show_progress=False, log=lines.append)

    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "diverged"
    assert status["epoch"] == 1 and 1 <= status["step"] <= 3  # 56 train images / 16: 3 steps an epoch
    assert status["loss"] in ("nan", "inf", "-inf")
    assert not (run_dir / "model.pt").exists() and not (run_dir / "metrics.json").exists()
    said = [line for line in lines if "diverged" in line]
    assert len(said) == 1 and "lower --lr" in said[0] and f"step {status['step']}" in said[0]
    assert "no checkpoint" in said[0]


def test_later_divergence_keeps_the_best_earlier_checkpoint(tiny_root, tmp_path):
    # Gradual: two sane head epochs on frozen features, then the network phase at lr 1e6.
    config = diverging(
        tiny_root,
        tmp_path / "runs",
        mode="gradual",
        weights="none",
        head_epochs=2,
        head_lr=1e-2,
        epochs=2,
        name="later",
    )
    lines: list[str] = []
    run_dir = fit(config, show_progress=False, log=lines.append)

    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "diverged" and status["epoch"] == 3 and status["step"] >= 1
    history = read_csv(run_dir / "history.csv")
    assert [int(row["epoch"]) for row in history] == [1, 2], "nothing is recorded past the diverged step"
    best = status["best_epoch"]
    assert best in (1, 2)
    checkpoint = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)
    assert checkpoint["meta"]["epoch"] == best
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values() if t.is_floating_point())
    said = [line for line in lines if "diverged" in line]
    assert len(said) == 1 and f"checkpoint of epoch {best}" in said[0] and "lower --lr" in said[0]

    # The record readers see a diverged run, not a finished one and not a crash.
    record = load_run(run_dir, require_finished=False)
    assert record.status.status == "diverged" and record.diverged and not record.finished
    assert [r.run_id for r in list_runs(tmp_path / "runs", finished_only=False)] == ["later"]
    assert list_runs(tmp_path / "runs") == []
    with pytest.raises(CxrlabError, match=r"diverged at epoch 3.*lower --lr"):
        load_run(run_dir)
    with pytest.raises(CxrlabError, match="already diverged"):
        fit(config, resume=run_dir, show_progress=False, log=lines.append)


def test_command_line_exits_1_with_one_line(tiny_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "cxrlab",
            "train",
            "--data",
            str(tiny_root),
            "--model",
            "scratch_cnn",
            "--mode",
            "scratch",
            "--optimizer",
            "sgd",
            "--lr",
            "1e6",
            "--warmup",
            "0",
            "--epochs",
            "2",
            "--image-size",
            "32",
            "--batch-size",
            "16",
            "--out",
            str(tmp_path / "runs"),
            "--name",
            "cli",
            "--quiet",
        ],
    )
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    assert exit_info.value.code == 1
    said = [line for line in captured.err.splitlines() if "diverged" in line]
    assert len(said) == 1 and "try a lower --lr (now 1e+06)" in said[0]
    assert "Traceback" not in captured.err + captured.out
    assert captured.out.strip() == str(tmp_path / "runs" / "cli")
    assert load_run(tmp_path / "runs" / "cli", require_finished=False).diverged


def test_a_sane_learning_rate_does_not_diverge(tiny_root, tmp_path):
    """The control: the same settings at lr 0.01 finish, so the checks above test the lr."""
    run_dir = fit(
        diverging(tiny_root, tmp_path / "runs", lr=1e-2, epochs=1, name="sane"),
        show_progress=False,
        log=lambda line: None,
    )
    assert load_run(run_dir).finished
