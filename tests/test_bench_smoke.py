"""The bench scripts run end to end on tiny synthetic data, so that they cannot rot.

Nothing here is timed: the figures themselves come from running the scripts on real data.
Each test checks that a script's record holds what its README line promises.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from cxrlab.testing import make_dataset_root

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import benchlib  # noqa: E402
import fast_paths  # noqa: E402
import finetune_speedup  # noqa: E402
import frozen_ratio  # noqa: E402
import frozen_speedup  # noqa: E402
import gpu  # noqa: E402
import input_pipeline  # noqa: E402
import memory  # noqa: E402
import optimizer_step  # noqa: E402
import tutorial  # noqa: E402

TINY = ["--subset", "0", "--image-size", "32", "--repeats", "1", "--weights", "none"]


@pytest.fixture(scope="module")
def bench_root(tmp_path_factory) -> Path:
    """40 + 40 synthetic 48-px images, shared by the tests of this module."""
    return make_dataset_root(tmp_path_factory.mktemp("bench") / "data", n_train=40)


def _record(results: Path, figure: str) -> dict:
    files = sorted(results.glob(f"{figure}-*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_subset_root_links_a_stable_sample(bench_root, tmp_path):
    first = benchlib.subset_root(bench_root, 20, cache_dir=str(tmp_path))
    again = benchlib.subset_root(bench_root, 20, cache_dir=str(tmp_path))
    links = sorted((first / "train").glob("*/*"))
    assert first == again and len(links) == 20
    assert all(p.is_symlink() and p.resolve().parent.parent == (bench_root / "train").resolve() for p in links)
    assert benchlib.subset_root(bench_root, 0) == bench_root.resolve()
    assert benchlib.subset_root(bench_root, 500) == bench_root.resolve()


def test_frozen_ratio(bench_root, tmp_path):
    record = frozen_ratio.main(["--data", str(bench_root), *TINY, "--epochs", "2", "--results", str(tmp_path)])
    assert record == _record(tmp_path, "frozen_ratio")
    frozen, finetune = record["runs"]["frozen"][0], record["runs"]["finetune"][0]
    assert len(frozen["epoch_seconds"]) == len(finetune["epoch_seconds"]) == 2
    assert record["value"] == pytest.approx(frozen["wall_seconds"] / finetune["wall_seconds"])
    assert frozen["feature_seconds"] > 0  # features computed cold, not found in a cache
    assert record["line"].endswith(f"{record['value']:.3f}")


def test_frozen_speedup_against_the_tutorial(bench_root, tmp_path):
    record = frozen_speedup.main(
        [
            "--data",
            str(bench_root),
            *TINY,
            "--epochs",
            "4",
            "--tutorial-epochs",
            "2",
            "--workers",
            "0",
            "--results",
            str(tmp_path),
        ]
    )
    tutorial_run, cxrlab_run = record["runs"]["tutorial"][0], record["runs"]["cxrlab"][0]
    assert len(tutorial_run["epoch_seconds"]) == 2 and "scaled to 4" in record["line"]
    # Both sides saw the same images: cxrlab's train and val splits.
    assert (tutorial_run["n_train"], tutorial_run["n_val"]) == (cxrlab_run["n_train"], cxrlab_run["n_val"])
    assert record["tutorial_seconds_scaled"][0] > sum(tutorial_run["epoch_seconds"])
    assert record["decode_seconds"] > 0


def test_finetune_speedup_with_profile(bench_root, tmp_path):
    record = finetune_speedup.main(
        [
            "--data",
            str(bench_root),
            *TINY,
            "--epochs",
            "1",
            "--workers",
            "0",
            "--profile",
            "--profile-steps",
            "1",
            "--results",
            str(tmp_path),
        ]
    )
    rates = record["images_per_second"]
    assert record["value"] == pytest.approx(rates["cxrlab"][0] / rates["tutorial"][0])
    for side in ("cxrlab", "tutorial"):
        share = record["profile"][side]["share"]
        assert sum(share.values()) == pytest.approx(1.0) and {"forward", "backward"} <= set(share)
    assert set(record["profile"]["tutorial"]["worker_ms_per_image"]) == {"decode (PIL)", "transforms"}


def test_tutorial_fixed_feature_extractor_trains_only_the_head(bench_root, tmp_path):
    model, optimizer, _ = tutorial.tutorial_model("efficientnet_lite0", "none", 2, fixed_feature_extractor=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"head.weight", "head.bias"}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2


def test_input_pipeline(bench_root, tmp_path):
    record = input_pipeline.main(["--data", str(bench_root), *TINY, "--workers", "0", "--results", str(tmp_path)])
    cxrlab_run, tutorial_run = record["runs"]["cxrlab"][0], record["runs"]["tutorial"][0]
    assert cxrlab_run["images"] == 32  # drop_last: one full batch of the 58 train images
    assert tutorial_run["images"] == 58  # the tutorial keeps the last, partial batch


def test_memory_child_peaks_and_train_command(bench_root, tmp_path):
    # A child that allocates 64 MB and reads a 16 MB memory-mapped pixels.npy through: both
    # must show in its peaks (it sleeps so that /proc is sampled while the pages are held).
    import numpy as np

    np.save(tmp_path / "pixels.npy", np.ones((16, 1024, 1024), dtype=np.uint8))
    script = (
        f"import numpy as np, time; a = np.load({str(tmp_path / 'pixels.npy')!r}, mmap_mode='r'); "
        "s = int(a.sum()); b = bytearray(64 * 1024 * 1024); time.sleep(1.0)"
    )
    child = memory.run_child([sys.executable, "-c", script], env=dict(os.environ))
    assert child["peak_rss_mb"] >= 64 + 16
    assert 15 <= child["peak_cache_mb"] <= 17 and child["peak_anon_mb"] >= 64
    args = benchlib.parser("x", subset=0, image_size=32, epochs=1).parse_args([])
    args.mode, args.weights = "frozen", "none"
    command = memory.train_command(bench_root, args, tmp_path / "runs")
    assert command[1:3] == ["-m", "cxrlab"]
    from cxrlab.cli import app

    result = CliRunner().invoke(app, command[3:])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "runs").glob("*/metrics.json"))) == 1


def test_gpu_dry_run(tmp_path):
    record = gpu.main(["--dry-run", "--model", "scratch_cnn", "--results", str(tmp_path)])
    assert record["n_train"] == 64 and len(record["epoch_seconds"]) == 1
    assert record["line"].startswith("dry run:") and len(list(tmp_path.glob("gpu_dry_run-*.json"))) == 1


def test_fast_paths(bench_root, tmp_path):
    record = fast_paths.main(["--data", str(bench_root), *TINY, "--epochs", "1", "--results", str(tmp_path)])
    assert set(record["train_speedup"]) == {"plain", "channels_last"}
    assert set(record["inference_speedup"]) == {"plain", "channels_last", "batch 32", "channels_last+batch 32"}
    assert record["train_speedup"]["plain"] == record["inference_speedup"]["plain"] == 1.0


def test_optimizer_step_fused_against_default(tmp_path):
    record = optimizer_step.main(["--steps", "3", "--repeats", "1", "--results", str(tmp_path)])
    assert record == _record(tmp_path, "optimizer_step")
    assert set(record["figures"]) == {f"{m}/{o}" for m in optimizer_step.MODELS for o in ("sgd", "adam", "adamw")}
    for figure in record["figures"].values():
        assert figure["default_ms"] > 0 and figure["fused_ms"] > 0
        assert figure["max_weight_difference"] < 1e-5  # the two implementations take the same steps


def test_affine_grid_matches_torch():
    theta = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(0))
    from cxrlab.data.transforms import affine_grid

    for height, width in ((32, 32), (17, 40)):
        expected = F.affine_grid(theta, [5, 1, height, width], align_corners=False)
        assert torch.allclose(affine_grid(theta, height, width), expected, atol=1e-6)


def test_transfer_sweep_and_cka(bench_root, tmp_path):
    import transfer

    record = transfer.main(
        [
            "--data",
            str(bench_root),
            *TINY,
            "--epochs",
            "1",
            "--probes",
            "12",
            "--depths",
            "0,7",
            "--results",
            str(tmp_path),
        ]
        + ["--cka-data", str(bench_root), "--cka-split", "all", "--cka-threads", "1"]
    )
    sweep = record["sweep"]["results"]["sweep"][0]
    assert sorted(int(k) for k in sweep["runs"]) == [0, 7] == record["sweep"]["depths"]
    finetune = record["sweep"]["results"]["finetune"][0]
    assert record["value"] == pytest.approx(sweep["train_seconds"] / finetune["train_seconds"])
    # Each depth computed its cached activations cold, and counts them.
    assert all(run["feature_seconds"] > 0 for run in sweep["runs"].values())
    cka = record["cka"]
    assert cka["probes"] == 12 and cka["peak_rss_mb"] > 0 and len(cka["cka"]) == 9
