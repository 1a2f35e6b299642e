"""bench/robust_options.py runs end to end on tiny synthetic data (nothing here is timed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cxrlab.testing import make_dataset_root

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import robust_options  # noqa: E402


def test_robust_options_records_a_ratio_per_option(tmp_path):
    root = make_dataset_root(tmp_path / "data", n_train=30)
    argv = ["--data", str(root), "--subset", "0", "--image-size", "32", "--epochs", "1", "--head-epochs", "1"]
    argv += ["--options", "wise,target_val"]
    record = robust_options.main([*argv, "--weights", "none", "--results", str(tmp_path / "results")])
    assert set(record["ratios"]) == {"wise", "target_val"}
    assert all(ratio > 0 for ratio in record["ratios"].values())
    assert set(record["adaptation_seconds_per_image"]) == {"bn", "prior", "bn+prior"}
    written = json.loads(next((tmp_path / "results").glob("robust_options-*.json")).read_text())
    assert written["line"].startswith("wall time over the plain gradual run")
