"""One run on two CPU processes under torchrun: DDP over gloo, rank 0 writes the run."""

from __future__ import annotations

import shutil
import subprocess
import sys

from cxrlab.testing import make_dataset_root
from cxrlab.training.records import list_runs


def test_torchrun_two_processes_identical_weights_one_run_directory(tmp_path):
    root = make_dataset_root(tmp_path / "data", n_train=24)
    out = tmp_path / "runs"
    torchrun = shutil.which("torchrun") or f"{sys.executable} -m torch.distributed.run"
    command = [
        *torchrun.split(),
        "--standalone",
        "--nproc_per_node",
        "2",
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
        "2",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--distributed",
        "--quiet",
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    runs = list_runs(out)
    assert len(runs) == 1 and len(list(out.iterdir())) == 1, "the run directory must be written once"
    distributed = runs[0].metrics.distributed.model_dump()
    assert distributed == {"world_size": 2, "backend": "gloo", "ranks_identical": True}
    # Each rank took half of every epoch's images: 2 epochs of (n_train // 2) // batch steps.
    assert len(runs[0].epochs) == 2
