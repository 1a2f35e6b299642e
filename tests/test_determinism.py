"""Determinism: on the CPU, the same seed and data give bit-identical runs.

Two runs of the same command (``--deterministic``, the CPU default) each start from an empty
cache, so decoding, splitting, feature extraction, augmentation and training all happen
twice; their model.pt tensors must be equal and their metrics.json, history.csv and
predictions.csv identical apart from times. A different seed must give different weights,
so the equality is not an accident of a run that learns nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cxrlab.training.features import clear_memory_cache
from cxrlab.training.records import load_run, read_csv

MODES = {
    "scratch": ["--model", "scratch_cnn", "--mode", "scratch", "--epochs", "2"],
    # Features of the frozen backbone with augmented views, the head on them, then the network.
    "gradual": [
        "--model",
        "scratch_cnn",
        "--mode",
        "gradual",
        "--weights",
        "none",
        "--head-epochs",
        "2",
        "--epochs",
        "1",
        "--feature-views",
        "2",
    ],
}


def run_once(cli, data: Path, tmp_path: Path, name: str, *extra: str) -> Path:
    clear_memory_cache()  # each run computes its features afresh
    result = cli(
        "train",
        "--data",
        str(data),
        *extra,
        "--image-size",
        "32",
        "--batch-size",
        "16",
        "--cache-dir",
        str(tmp_path / f"cache-{name}"),
        "--out",
        str(tmp_path / "runs"),
        "--name",
        name,
        "--quiet",
    )
    assert result.code == 0, result.err
    return tmp_path / "runs" / name


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)["state_dict"]


def untimed_metrics(run_dir: Path) -> str:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return json.dumps(
        {k: v for k, v in metrics.items() if not k.endswith("_seconds") and k != "machine"}, sort_keys=True
    )


def untimed_history(run_dir: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in read_csv(run_dir / "history.csv")]


@pytest.mark.parametrize("mode", MODES)
def test_same_seed_same_run_bit_for_bit(mode, tiny_root, tmp_path, cli):
    first = run_once(cli, tiny_root, tmp_path, "first", *MODES[mode], "--seed", "5", "--deterministic")
    second = run_once(cli, tiny_root, tmp_path, "second", *MODES[mode], "--seed", "5", "--deterministic")

    a, b = weights(first), weights(second)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert untimed_metrics(first) == untimed_metrics(second)
    assert untimed_history(first) == untimed_history(second)
    assert (first / "predictions.csv").read_text() == (second / "predictions.csv").read_text()
    assert (first / "split.csv").read_text() == (second / "split.csv").read_text()
    assert load_run(first).config.environment["deterministic"] is True

    other = run_once(cli, tiny_root, tmp_path, "other-seed", *MODES[mode], "--seed", "6", "--deterministic")
    c = weights(other)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point()), "the seed changes nothing"


def test_deterministic_is_the_cpu_default(tiny_root, tmp_path, cli):
    run_dir = run_once(
        cli,
        tiny_root,
        tmp_path,
        "default",
        "--model",
        "scratch_cnn",
        "--mode",
        "scratch",
        "--epochs",
        "1",
        "--device",
        "cpu",
    )
    record = load_run(run_dir).config
    assert record.deterministic is None and record.environment["deterministic"] is True
    assert torch.are_deterministic_algorithms_enabled()
