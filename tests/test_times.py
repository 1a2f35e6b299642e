"""Training times that survive a loaded machine: CPU seconds beside wall seconds, per epoch
and per run, and the machine's load recorded with them."""

from __future__ import annotations

import pytest
import torch

from cxrlab.training.config import TrainConfig
from cxrlab.training.loop import fit
from cxrlab.training.records import load_run
from cxrlab.training.run_metrics import MachineLoad


@pytest.mark.parametrize("mode", ["frozen", "scratch"])
def test_cpu_seconds_and_machine_load_are_recorded(mode, tiny_root, tmp_path):
    config = TrainConfig(
        data=str(tiny_root),
        model="scratch_cnn",
        mode=mode,
        weights="none",
        image_size=32,
        batch_size=16,
        epochs=2,
        out=str(tmp_path / "runs"),
        name=mode,
    )
    run = load_run(fit(config, show_progress=False))
    assert all(row.cpu_seconds is not None and row.cpu_seconds >= 0 for row in run.epochs)
    metrics = run.scores
    epochs_cpu = sum(row.cpu_seconds for row in run.epochs)
    # A frozen run's CPU time counts its feature pass too, as its wall time does.
    assert (
        metrics.train_cpu_seconds == pytest.approx(epochs_cpu, abs=0.01)
        if mode == "scratch"
        else (metrics.train_cpu_seconds > epochs_cpu)
    )
    assert metrics.machine is not None and metrics.machine.threads == torch.get_num_threads()
    assert "cpu_seconds" in (run.path / "history.csv").read_text().splitlines()[0]


def test_loaded_means_more_load_than_cores():
    quiet = MachineLoad(threads=2, cpu_count=2, load_average_start=1.9, load_average_end=2.2)
    busy = MachineLoad(threads=2, cpu_count=2, load_average_start=1.0, load_average_end=4.1)
    unknown = MachineLoad(threads=2, cpu_count=2, load_average_start=None, load_average_end=None)
    assert not quiet.loaded and busy.loaded and not unknown.loaded
