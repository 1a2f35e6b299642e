"""Resume: kill a real ``cxrlab sweep`` process during its second run (SIGKILL), run the
same command again, and check that the study finished with every run done once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from cxrlab.study.trials import RUN_ID

RUNS = [
    "scratch_cnn-scratch-lr=1e-3-ep=1-seed=0",
    "scratch_cnn-scratch-lr=2e-3-ep=10-seed=0",
    "scratch_cnn-scratch-lr=3e-3-ep=1-seed=0",
]


def status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "status.json").read_text())["status"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.mark.slow
def test_killed_sweep_resumes_without_redoing_or_duplicating(tmp_path, tiny_root):
    # The second run is long (10 epochs) so that the kill lands inside it.
    study = tmp_path / "resume.yaml"
    study.write_text(f"""
name: resume
data: {tiny_root}
defaults: {{batch_size: 16, image_size: 32}}
runs:
  - {{model: scratch_cnn, mode: scratch, lr: 1.0e-3, epochs: 1}}
  - {{model: scratch_cnn, mode: scratch, lr: 2.0e-3, epochs: 10}}
  - {{model: scratch_cnn, mode: scratch, lr: 3.0e-3, epochs: 1}}
""")
    command = [sys.executable, "-m", "cxrlab", "sweep", str(study), "--set", "augment=none"]
    runs_dir = tmp_path / "runs" / "resume" / "runs"
    first, second = runs_dir / RUNS[0], runs_dir / RUNS[1]

    sweep = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not (status(first) == "finished" and (second / "history.csv").exists()):
        assert sweep.poll() is None, "the sweep ended before it could be killed:\n" + sweep.stdout.read().decode()
        assert time.monotonic() < deadline, "the second run never started"
        time.sleep(0.02)
    os.kill(sweep.pid, signal.SIGKILL)
    sweep.wait()
    sweep.stdout.close()

    assert status(second) == "running", "killed inside the second run"
    assert not (runs_dir / RUNS[2]).exists()
    epochs_before_kill = len((second / "history.csv").read_text().splitlines()) - 1
    assert 1 <= epochs_before_kill < 10
    untouched = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}

    rerun = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming" in rerun.stderr

    # Every run finished, each once, in its own directory; the first one was not touched.
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(RUNS)
    assert all(status(runs_dir / run) == "finished" for run in RUNS)
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    history = (second / "history.csv").read_text().splitlines()[1:]
    assert [int(line.split(",")[0]) for line in history] == list(range(1, 11)), "each epoch once, resumed not restarted"

    trials = optuna.load_study(
        study_name="resume", storage=f"sqlite:///{tmp_path / 'runs' / 'resume' / 'study.db'}"
    ).get_trials()
    complete = [t.user_attrs[RUN_ID] for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete) == sorted(RUNS), "one completed trial per run"
    (killed,) = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert killed.user_attrs[RUN_ID] == RUNS[1], "the dead worker's trial was failed and its run queued again"
    rows = [
        line
        for line in (tmp_path / "runs" / "resume" / "results.md").read_text().splitlines()
        if line.startswith("| scratch_cnn")
    ]
    assert len(rows) == 3
