"""Kill and resume: a run killed with SIGKILL and resumed ends exactly where an uninterrupted run does.

Real ``cxrlab train`` processes run side by side and are killed with ``kill -9`` at points
drawn at random (printed with the seed that drew them; ``CXRLAB_KILL_SEED`` replays one):

* a fine-tune run, at a random time inside epoch 2;
* a gradual run, in its head phase just after a checkpoint; then ``cxrlab train --resume``
  in a new process, killed again at a random time inside a network-phase epoch.

Each killed run is then finished with ``cxrlab train --resume RUN_DIR`` and compared with the
same command run without interruption: the selected weights (model.pt) must be
bit-identical, and metrics.json, history.csv and predictions.csv identical apart from times.
Both runs augment their batches, and the fine-tuned torchvision EfficientNet-B0 keeps
dropout and stochastic depth (drop path) active in training, so the per-epoch generator and
the saved global RNG state both matter.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import yaml

from cxrlab.testing import make_dataset_root
from cxrlab.training.records import read_csv
from cxrlab.training.rundir import load_tensors

SEED = int(os.environ.get("CXRLAB_KILL_SEED") or random.SystemRandom().randrange(1_000_000))
HEAD_EPOCHS = 16

COMMON = ["--image-size", "32", "--batch-size", "8", "--seed", "7", "--quiet"]
CONFIGS = {
    "finetune": ["--model", "efficientnet_b0", "--mode", "finetune", "--weights", "none", "--epochs", "3", *COMMON],
    "gradual": [
        "--model",
        "scratch_cnn",
        "--mode",
        "gradual",
        "--weights",
        "none",
        "--head-epochs",
        str(HEAD_EPOCHS),
        "--head-lr",
        "0.01",
        "--epochs",
        "4",
        *COMMON,
    ],
}


@dataclass
class KillPoint:
    """Kill ``delay(rows)`` seconds after last.pt holds ``after_rows`` epochs."""

    after_rows: int
    delay: Callable[[list[dict]], float]
    what: str
    # When the checkpoint was seen, what last.pt says at the kill, and how far history.csv had got.
    seen_rows: int = 0
    waited: float = 0.0
    phase: int = -1
    epochs_done: int = -1
    history_rows: int = -1

    def describe(self) -> str:
        return (
            f"{self.what}: killed {self.waited * 1000:.0f} ms after the checkpoint of epoch {self.seen_rows}; last.pt "
            f"phase {self.phase + 1}, {self.epochs_done} epochs done; history.csv {self.history_rows} rows"
        )


@dataclass
class Chain:
    """One run: started, killed at each point in turn (later starts are ``--resume``), resumed in-process last."""

    name: str
    config: str
    points: list[KillPoint]
    run_dir: Path = Path()
    logs: list[Path] = field(default_factory=list)  # stderr of each killed process


def _chains(rng: random.Random) -> list[Chain]:
    def inside_next_epoch(rows: list[dict]) -> float:
        # A random moment inside the epoch after the last finished one, well before its end.
        return rng.uniform(0.1, 0.8) * float(rows[-1]["seconds"])

    head_after = rng.randint(1, 6)  # at least ten head epochs to go: the kill cannot miss the phase
    network_after = HEAD_EPOCHS + rng.randint(1, 2)
    return [
        Chain("finetune", "finetune", [KillPoint(1, inside_next_epoch, "finetune: a random time inside epoch 2")]),
        Chain(
            "gradual",
            "gradual",
            [
                KillPoint(
                    head_after,
                    lambda rows: rng.uniform(0.0, 0.01),
                    f"gradual, head phase: 0-10 ms after head epoch {head_after}'s checkpoint",
                ),
                KillPoint(
                    network_after,
                    inside_next_epoch,
                    f"gradual, network phase, after a resume: a random time inside epoch {network_after + 1}",
                ),
            ],
        ),
    ]


CHAINS = _chains(random.Random(SEED))


def _history(run_dir: Path) -> list[dict]:
    try:
        return read_csv(run_dir / "history.csv")
    except (OSError, ValueError):
        return []


def _checkpointed_rows(run_dir: Path) -> list[dict]:
    """history.csv's rows once last.pt has caught up with them (it is written after), else []."""
    rows = _history(run_dir)
    try:
        caught_up = (run_dir / "last.pt").stat().st_mtime_ns >= (run_dir / "history.csv").stat().st_mtime_ns
    except OSError:
        return []
    return rows if caught_up else []


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_dataset_root(tmp_path_factory.mktemp("resume") / "data", n_train=12)


def kill_chains(data_root: Path, out: Path) -> None:
    """Run every chain side by side: real ``cxrlab train`` processes, each ended by kill -9 at its point."""
    out.mkdir(parents=True, exist_ok=True)

    def start(chain: Chain, stage: int) -> subprocess.Popen:
        if stage == 0:
            args = ["--data", str(data_root), *CONFIGS[chain.config], "--out", str(out), "--name", chain.name]
        else:
            args = ["--resume", str(chain.run_dir), "--quiet"]
        chain.logs.append(out / f"{chain.name}-{stage}.stderr")
        with open(chain.logs[-1], "w") as stderr:
            return subprocess.Popen(
                [sys.executable, "-m", "cxrlab", "train", *args], stdout=subprocess.DEVNULL, stderr=stderr
            )

    running: dict[str, tuple[Chain, int, subprocess.Popen]] = {}
    for chain in CHAINS:
        chain.run_dir = out / chain.name
        running[chain.name] = (chain, 0, start(chain, 0))
    kill_at: dict[str, float] = {}
    deadline = time.monotonic() + 300
    try:
        while running:
            assert time.monotonic() < deadline, f"no kill point reached: {sorted(running)}"
            for name, (chain, stage, process) in list(running.items()):
                point = chain.points[stage]
                if process.poll() is not None:
                    message = chain.logs[stage].read_text()
                    pytest.fail(f"{point.what}: the process ended (exit {process.returncode}) first:\n{message}")
                if name not in kill_at:
                    rows = _checkpointed_rows(chain.run_dir)
                    if len(rows) >= point.after_rows:
                        point.seen_rows, point.waited = len(rows), point.delay(rows)
                        kill_at[name] = time.monotonic() + point.waited
                elif time.monotonic() >= kill_at[name]:
                    os.kill(process.pid, signal.SIGKILL)
                    assert process.wait(timeout=30) == -signal.SIGKILL
                    state = torch.load(chain.run_dir / "last.pt", map_location="cpu", weights_only=True)
                    point.phase, point.epochs_done = int(state["phase"]), int(state["epochs_done"])
                    point.history_rows = len(_history(chain.run_dir))
                    del kill_at[name], running[name]
                    if stage + 1 < len(chain.points):
                        running[name] = (chain, stage + 1, start(chain, stage + 1))
            time.sleep(0.002)
    finally:
        for _, _, process in running.values():
            process.kill()
            process.wait()


def uninterrupted(config: str, data_root: Path, out: Path, cli) -> Path:
    """The same command, run to the end without a kill."""
    result = cli("train", "--data", str(data_root), *CONFIGS[config], "--out", str(out), "--name", f"ref-{config}")
    assert result.code == 0, result.err
    return out / f"ref-{config}"


def assert_same_run(resumed: Path, reference: Path) -> None:
    a = torch.load(resumed / "model.pt", map_location="cpu", weights_only=True)
    b = torch.load(reference / "model.pt", map_location="cpu", weights_only=True)
    assert a["meta"] == b["meta"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), f"model.pt differs at {key}"

    def untimed(path: Path) -> str:
        metrics = json.loads(path.read_text())
        return json.dumps(
            {k: v for k, v in metrics.items() if not k.endswith("_seconds") and k != "machine"}, sort_keys=True
        )

    assert untimed(resumed / "metrics.json") == untimed(reference / "metrics.json")
    strip = lambda rows: [{k: v for k, v in row.items() if not k.endswith("seconds")} for row in rows]  # noqa: E731
    assert strip(read_csv(resumed / "history.csv")) == strip(read_csv(reference / "history.csv"))
    assert (resumed / "predictions.csv").read_text() == (reference / "predictions.csv").read_text()
    assert not (resumed / "last.pt").exists()


def test_dropout_and_drop_path_are_active_in_the_finetuned_model():
    """Without them the finetune case would not test that the RNG state survives a kill."""
    from torchvision.ops import StochasticDepth

    from cxrlab.models.registry import build_model

    model = build_model("efficientnet_b0")
    assert any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())
    assert any(isinstance(m, StochasticDepth) and m.p > 0 for m in model.modules())


def test_killed_runs_resume_identical_to_uninterrupted_ones(data_root, tmp_path, cli):
    # One test for all chains: they run side by side, and pytest-xdist keeps a test on one worker.
    kill_chains(data_root, tmp_path / "killed")
    tried: list[str] = []
    for chain in CHAINS:
        for point in chain.points:
            assert point.epochs_done >= 1, point.describe()
        if chain.config == "gradual":
            assert [p.phase for p in chain.points] == [0, 1], "one kill in each phase"
        assert json.loads((chain.run_dir / "status.json").read_text())["status"] == "running"
        assert not (chain.run_dir / "metrics.json").exists()

        # Each resume picks up at the epoch after the last checkpoint, not from the start.
        logs = [log.read_text() for log in chain.logs[1:]]
        result = cli("train", "--resume", str(chain.run_dir), "--quiet")
        assert result.code == 0, result.err
        for point, log in zip(chain.points, logs + [result.err]):
            assert f"resuming {chain.run_dir} at phase {point.phase + 1}, epoch {point.epochs_done + 1}" in log, log
        assert json.loads((chain.run_dir / "status.json").read_text())["status"] == "finished"
        record = yaml.safe_load((chain.run_dir / "config.yaml").read_text())
        assert record["augment"] != "none" and record["environment"]["deterministic"] is True
        reference = uninterrupted(chain.config, data_root, tmp_path / "uninterrupted", cli)
        assert_same_run(chain.run_dir, reference)
        tried += [f"seed {SEED}: {point.describe()}: resumed run identical" for point in chain.points]

    # Resuming a finished run must not train it again.
    run_dir = CHAINS[-1].run_dir
    before = (run_dir / "model.pt").read_bytes()
    result = cli("train", "--resume", str(run_dir), "--quiet")
    assert result.code == 2 and "already finished" in result.err
    assert (run_dir / "model.pt").read_bytes() == before
    print("\n".join(tried))  # the kill points tried, for the record (pytest -rP shows them)


def test_a_run_killed_before_its_first_checkpoint_starts_over(data_root, tmp_path, cli):
    """No last.pt yet (killed while epoch 1's checkpoint was being written): --resume starts afresh."""
    import shutil

    args = [
        "train",
        "--data",
        str(data_root),
        "--model",
        "scratch_cnn",
        "--mode",
        "scratch",
        "--epochs",
        "2",
        *COMMON,
        "--out",
        str(tmp_path),
    ]
    assert cli(*args, "--name", "early").code == 0
    shutil.copytree(tmp_path / "early", tmp_path / "reference")
    # What such a kill leaves: the run marked running, epoch 1's history row and model.pt, no last.pt.
    run_dir = tmp_path / "early"
    (run_dir / "status.json").write_text(json.dumps({"status": "running"}))
    history = (run_dir / "history.csv").read_text().splitlines()
    (run_dir / "history.csv").write_text("\n".join(history[:2]) + "\n")
    for name in ("metrics.json", "predictions.csv"):
        (run_dir / name).unlink()

    result = cli("train", "--resume", str(run_dir), "--quiet")
    assert result.code == 0, result.err
    assert_same_run(run_dir, tmp_path / "reference")


def test_resume_refuses_data_that_changed(data_root, tmp_path, cli):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    assert (
        cli(
            "train",
            "--data",
            str(root),
            "--model",
            "scratch_cnn",
            "--mode",
            "scratch",
            "--epochs",
            "1",
            *COMMON,
            "--out",
            str(tmp_path),
            "--name",
            "moved",
        ).code
        == 0
    )
    run_dir = tmp_path / "moved"
    (run_dir / "status.json").write_text(json.dumps({"status": "running"}))  # as a kill -9 leaves it
    extra = next((root / "train" / "NORMAL").iterdir())
    shutil.copy(extra, extra.with_name("IM-9999-0001.jpeg"))
    result = cli("train", "--resume", str(run_dir), "--quiet")
    assert result.code == 2 and "changed since the run started" in result.err


class _Stop(Exception):
    pass


def test_a_kill_between_history_and_checkpoint_redoes_that_epoch(data_root, tmp_path):
    """history.csv (and model.pt) are written before last.pt: a kill in between leaves a row of
    an epoch that the checkpoint does not hold; the resumed run redoes that epoch once."""
    import shutil

    from cxrlab.training.config import TrainConfig
    from cxrlab.training.loop import fit

    def config(name: str) -> TrainConfig:
        return TrainConfig(
            data=str(data_root),
            model="scratch_cnn",
            mode="scratch",
            epochs=3,
            image_size=32,
            batch_size=8,
            seed=7,
            out=str(tmp_path),
            name=name,
        )

    reference = fit(config("reference"), show_progress=False, log=lambda line: None)

    def checkpoint_of_epoch(epochs_done: int) -> Path:
        # Network phases write last.pt on a background thread: wait until it holds the epoch.
        path = tmp_path / "cut" / "last.pt"
        for _ in range(600):
            if path.exists() and int(load_tensors(path)["epochs_done"]) == epochs_done:
                return path
            time.sleep(0.05)
        raise AssertionError(f"last.pt never held epoch {epochs_done}")

    def stop_after_epoch_2(line: str) -> None:
        # Called just after each epoch: keep epoch 1's checkpoint, stop once epoch 2's is written.
        if line.startswith("epoch   1"):
            shutil.copy(checkpoint_of_epoch(1), tmp_path / "last-epoch-1.pt")
        if line.startswith("epoch   2"):
            checkpoint_of_epoch(2)
            raise _Stop

    with pytest.raises(_Stop):
        fit(config("cut"), show_progress=False, log=stop_after_epoch_2)
    shutil.copy(tmp_path / "last-epoch-1.pt", tmp_path / "cut" / "last.pt")
    assert len(read_csv(tmp_path / "cut" / "history.csv")) == 2

    lines: list[str] = []
    fit(config("cut"), resume=tmp_path / "cut", show_progress=False, log=lines.append)
    assert any("resuming" in line and "epoch 2" in line for line in lines)
    assert [int(row["epoch"]) for row in read_csv(tmp_path / "cut" / "history.csv")] == [1, 2, 3]
    assert_same_run(tmp_path / "cut", reference)
