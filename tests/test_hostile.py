"""Hostile input, as a table: every command, every case ends the way the README promises.

Each case builds what it needs (a damaged copy of a finished run, a file where a folder
belongs, a folder that cannot be written, a run directory another process owns, numbers
out of range) and runs the real command line in-process (``cxrlab.cli.main`` with
``sys.argv`` set, as the ``cli`` fixture does), in a fresh working folder. Outcomes:

* ``ONE_LINE``: exit code 2, no traceback, exactly one line on stderr, and that line names
  the thing that is wrong;
* ``HANDLED``: the input is legitimate if odd; the command does the documented thing (exit
  code 0, or 1 for a run that diverged) and says what it did.

For every case, no file appears that claims to be a result it is not: no metrics.json,
eval-*.json, predictions, exported model, comparison or report from a command that failed,
and no status.json saying "finished".
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrlab.testing import CliResult, make_class_folders, make_dataset_root

SIZE = 32
ONE_LINE, HANDLED = "one line", "handled"
COMMANDS = {"train", "evaluate", "predict", "export", "compare", "report", "sweep", "study", "models", "data inspect"}
# Files whose presence claims a result (status.json only when it says finished).
RESULT_NAMES = {
    "metrics.json",
    "predictions.csv",
    "model.onnx",
    "model.onnx.json",
    "model.torchscript.pt",
    "model.torchscript.json",
    "comparison.json",
    "comparison.md",
    "report.md",
    "report.html",
    "results.md",
    "results.csv",
}


# --- the world a case runs in ------------------------------------------------------------------


@dataclass
class Shared:
    """Built once for the module: small data, a finished run, a run killed before scoring."""

    data: Path
    run: Path
    resumable: Path


@dataclass
class World:
    tmp: Path
    shared: Shared
    held: ExitStack = field(default_factory=ExitStack)

    @property
    def data(self) -> str:
        return str(self.shared.data)

    @property
    def out(self) -> str:
        return str(self.tmp / "runs")

    def path(self, name: str) -> str:
        return str(self.tmp / name)

    def file(self, name: str, content: bytes = b"not what it should be\n") -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return str(path)

    def copy(self, source: Path, damage: Callable[[Path], None] | None = None, name: str | None = None) -> str:
        target = self.tmp / "copies" / (name or source.name)
        shutil.copytree(source, target)
        if damage is not None:
            damage(target)
        return str(target)

    def run(self, damage: Callable[[Path], None] | None = None) -> str:
        return self.copy(self.shared.run, damage)

    def resumable(self, damage: Callable[[Path], None] | None = None) -> str:
        return self.copy(self.shared.resumable, damage)

    def root(self, change: Callable[[Path], None] | None = None) -> str:
        root = make_dataset_root(self.tmp / "root", n_train=8, size=SIZE)
        if change is not None:
            change(root)
        return str(root)

    def npz(self, name: str = "medmnist.npz", shape=(28, 28), train_labels=None, test_labels=None) -> str:
        rng = np.random.default_rng(0)
        n = 16
        labels = np.arange(n) % 2 if train_labels is None else np.asarray(train_labels)
        arrays = {"train_images": rng.integers(0, 255, (n, *shape), dtype=np.uint8), "train_labels": labels}
        if test_labels is not None:
            arrays["test_images"] = rng.integers(0, 255, (len(test_labels), *shape), dtype=np.uint8)
            arrays["test_labels"] = np.asarray(test_labels)
        path = self.tmp / name
        np.savez(path, **arrays)
        return str(path)

    def folder(self, name: str) -> str:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def read_only(self, name: str) -> str:
        """A folder nothing can be written into (chmod, or chattr +i for root); skipped where
        neither holds."""
        folder = self.tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o555)
        self.held.callback(os.chmod, folder, 0o755)
        immutable = ["chattr", "+i", str(folder)]
        if (
            _writable(folder)
            and shutil.which("chattr")
            and subprocess.run(immutable, capture_output=True).returncode == 0
        ):
            self.held.callback(subprocess.run, ["chattr", "-i", str(folder)], capture_output=True)
        if _writable(folder):
            pytest.skip("no way to make a read-only folder here")
        return str(folder)

    def claimed(self, run_dir: str) -> str:
        """``run_dir``, owned by a live writer until the case ends (a lock held in this process
        through its own descriptor, as another training would hold it)."""
        from cxrlab.training.claim import claim_run_dir

        self.held.enter_context(claim_run_dir(run_dir))
        return run_dir

    def study(self, body: str, name: str = "study.yaml") -> str:
        return self.file(name, textwrap.dedent(body).replace("DATA", self.data).encode())


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return False
    probe.unlink()
    return True


# --- ways to damage a run directory ----------------------------------------------------------


def cut(name: str, keep: int = 40) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        path = run_dir / name
        path.write_bytes(path.read_bytes()[:keep])

    return damage


def replace(name: str, content: bytes) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        (run_dir / name).write_bytes(content)

    return damage


def remove(name: str) -> Callable[[Path], None]:
    return lambda run_dir: (run_dir / name).unlink()


def other_model(name: str = "model.pt", key: str = "state_dict") -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        from cxrlab.models.registry import build_model

        state = build_model("resnet18").state_dict()
        payload = torch.load(run_dir / name, weights_only=True)
        payload[key] = state
        torch.save(payload, run_dir / name)

    return damage


def drop_key(name: str, key: str) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        payload = torch.load(run_dir / name, weights_only=True)
        del payload[key]
        torch.save(payload, run_dir / name)

    return damage


def status(text: str) -> Callable[[Path], None]:
    return replace("status.json", text.encode())


def config_line(line: str) -> Callable[[Path], None]:
    def damage(run_dir: Path) -> None:
        path = run_dir / "config.yaml"
        path.write_text(path.read_text(encoding="utf-8") + line + "\n", encoding="utf-8")

    return damage


def owned_elsewhere(run_dir: Path) -> None:
    (run_dir / "owner.json").write_text(json.dumps({"pid": 4242, "host": "other-machine", "time": time.time()}))


# --- ways to change a data root ----------------------------------------------------------------


def link_into_sibling(root: Path) -> None:
    os.symlink("../PNEUMONIA", root / "train" / "NORMAL" / "more")


def latin1_name(root: Path) -> None:
    first = next((root / "train" / "NORMAL").iterdir())
    name = os.fsencode(root / "train" / "NORMAL") + b"/R\xf6ntgen.jpeg"
    try:
        with open(name, "wb") as f:
            f.write(first.read_bytes())
    except OSError:
        pytest.skip("this file system refuses names that are not UTF-8")


def twin_under_other_label(root: Path) -> None:
    first = sorted((root / "train" / "NORMAL").iterdir())[0]
    (root / "train" / "PNEUMONIA" / "person900_bacteria_1.jpeg").write_bytes(first.read_bytes())


def unlistable(monkeypatch: pytest.MonkeyPatch, folder: str) -> None:
    # Root reads every folder whatever its mode: the kernel's refusal is staged instead.
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == folder:
            raise PermissionError(13, "Permission denied", folder)
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


# --- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[World], list[str]]
    names: str | Callable[[World], str] = ""  # ONE_LINE: what the line must name
    expect: str = ONE_LINE
    check: Callable[[World, CliResult], None] | None = None  # HANDLED: what the command did
    code: int = 2
    slow: bool = False
    monkeypatch: Callable[[World, pytest.MonkeyPatch], None] | None = None

    @property
    def command(self) -> str:
        return "data inspect" if self.name.startswith("data inspect") else self.name.split(":")[0]


def train(w: World, *extra: str, data: str | None = None) -> list[str]:
    return [
        "train", "--data", data or w.data, "--model", "scratch_cnn", "--mode", "scratch", "--epochs", "1",
        "--image-size", str(SIZE), "--batch-size", "8", "--out", w.out, "--quiet", *extra,
    ]  # fmt: skip


def finished_in(out: str) -> Callable[[World, CliResult], None]:
    def check(w: World, result: CliResult) -> None:
        statuses = [json.loads(p.read_text())["status"] for p in Path(out.format(tmp=w.tmp)).rglob("status.json")]
        assert statuses == ["finished"], (statuses, result.err[-500:])

    return check


def says(*words: str, stream: str = "err") -> Callable[[World, CliResult], None]:
    def check(w: World, result: CliResult) -> None:
        text = getattr(result, stream)
        assert all(word in text for word in words), text[-800:]

    return check


CASES = [
    # train: data
    Case("train: --data that does not exist", lambda w: train(w, data=w.path("nowhere")), "nowhere"),
    Case("train: --data a text file", lambda w: train(w, data=w.file("notes.txt")), "notes.txt"),
    Case("train: --data an empty folder", lambda w: train(w, data=w.folder("empty")), "empty"),
    Case(
        "train: --data loose images, no class folders",
        lambda w: train(w, data=str(Path(w.data) / "train" / "NORMAL")),
        "no class folders",
    ),
    Case(
        "train: --data pneumoniamnist_64.npz that is not there",
        lambda w: train(w, data="pneumoniamnist_64.npz"),
        "pneumoniamnist_64.npz does not exist",
    ),
    Case("train: --data pneumoniamnist:65", lambda w: train(w, data="pneumoniamnist:65"), "pneumoniamnist:65"),
    Case(
        "train: a class folder linked into its sibling",
        lambda w: train(w, data=w.root(link_into_sibling)),
        "reached twice",
    ),
    Case("train: a file name that is not UTF-8", lambda w: train(w, data=w.root(latin1_name)), "R\\xf6ntgen.jpeg"),
    Case(
        "train: identical bytes under two labels",
        lambda w: train(w, data=w.root(twin_under_other_label)),
        "--on-duplicate-label keep",
    ),
    Case("train: .npz of empty images (N, 0, 0)", lambda w: train(w, data=w.npz(shape=(0, 0))), "medmnist.npz"),
    Case("train: .npz labels 0 and 2", lambda w: train(w, data=w.npz(train_labels=[0, 2] * 8)), "no image of class 1"),
    Case(
        "train: .npz test label train never saw",
        lambda w: train(w, data=w.npz(test_labels=[0, 1, 2, 1])),
        "test_labels holds class 2",
    ),
    Case(
        "train: .npz images (N, H, W, 1)",
        lambda w: train(w, "--name", "npz", data=w.npz(shape=(28, 28, 1))),
        expect=HANDLED,
        code=0,
        check=finished_in("{tmp}/runs/npz"),
        slow=True,
    ),
    Case("train: --labels kermany3 on a .npz", lambda w: train(w, "--labels", "kermany3", data=w.npz()), "kermany3"),
    # train: settings
    Case("train: unknown --model", lambda w: train(w, "--model", "resnet51"), "resnet51"),
    Case("train: unknown --mode", lambda w: train(w, "--mode", "half"), "--mode"),
    Case("train: --lr 0", lambda w: train(w, "--lr", "0"), "--lr"),
    Case("train: --lr nan", lambda w: train(w, "--lr", "nan"), "--lr"),
    Case("train: --lr -1", lambda w: train(w, "--lr", "-1"), "--lr"),
    Case("train: --weight-decay inf", lambda w: train(w, "--weight-decay", "inf"), "--weight-decay"),
    Case("train: --weight-decay -0.1", lambda w: train(w, "--weight-decay", "-0.1"), "--weight-decay"),
    Case("train: --epochs 0", lambda w: train(w, "--epochs", "0"), "--epochs"),
    Case("train: --epochs 10**9", lambda w: train(w, "--epochs", str(10**9)), "--epochs"),
    Case("train: --batch-size 0", lambda w: train(w, "--batch-size", "0"), "--batch-size"),
    Case("train: --image-size 0", lambda w: train(w, "--image-size", "0"), "--image-size"),
    Case("train: --image-size 100000", lambda w: train(w, "--image-size", "100000"), "--image-size"),
    Case("train: --seed -1", lambda w: train(w, "--seed", "-1"), "--seed"),
    Case("train: --seed 2**40", lambda w: train(w, "--seed", str(2**40)), "--seed"),
    Case("train: --split-seed -5", lambda w: train(w, "--split-seed", "-5"), "--split-seed"),
    Case("train: --split-seed 99999999999", lambda w: train(w, "--split-seed", "99999999999"), "--split-seed"),
    Case("train: --tta -1", lambda w: train(w, "--tta", "-1"), "--tta"),
    Case("train: --warmup -1", lambda w: train(w, "--warmup", "-1"), "--warmup"),
    Case("train: --label-smoothing 1.5", lambda w: train(w, "--label-smoothing", "1.5"), "--label-smoothing"),
    Case("train: --threshold 0.7", lambda w: train(w, "--threshold", "0.7"), "--threshold"),
    Case("train: --backbone-lr-scale 0", lambda w: train(w, "--backbone-lr-scale", "0"), "--backbone-lr-scale"),
    Case("train: --feature-views 0", lambda w: train(w, "--feature-views", "0"), "--feature-views"),
    Case("train: --device cuda without CUDA", lambda w: train(w, "--device", "cuda"), "cuda"),
    Case("train: --device tpu", lambda w: train(w, "--device", "tpu"), "--device"),
    Case("train: --on-bad-image maybe", lambda w: train(w, "--on-bad-image", "maybe"), "--on-bad-image"),
    Case("train: --name ../escape", lambda w: train(w, "--name", "../escape"), "--name"),
    Case(
        "train: frozen with --augment light and one feature view",
        lambda w: train(w, "--mode", "frozen", "--augment", "light"),
        "augment light",
    ),
    Case(
        "train: a weight decay that blows the weights up",
        lambda w: train(w, "--weight-decay", "1e30", "--lr", "0.1", "--optimizer", "sgd"),
        expect=HANDLED,
        code=1,  # documented: a diverged run is a result, exit code 1
        check=says("run diverged", "try a lower --weight-decay"),
        slow=True,
    ),
    # train: places
    Case("train: --out is a file", lambda w: train(w, "--out", w.file("taken")), "taken"),
    Case("train: --out is read-only", lambda w: train(w, "--out", w.read_only("locked-out")), "locked-out"),
    Case("train: --cache-dir is a file", lambda w: train(w, "--cache-dir", w.file("cache-file")), "cache-file"),
    Case(
        "train: --cache-dir is read-only",
        lambda w: train(w, "--cache-dir", w.read_only("locked-cache")),
        "locked-cache",
    ),
    Case("train: --weights that is not there", lambda w: train(w, "--weights", w.path("w.pt")), "w.pt"),
    Case("train: --weights a text file", lambda w: train(w, "--weights", w.file("w.pth")), "w.pth"),
    Case(
        "train: --weights of another architecture",
        lambda w: train(w, "--weights", str(Path(w.run(other_model())) / "model.pt")),
        "model.pt",
    ),
    # train: run directories, concurrent writers
    Case(
        "train: --name of a finished run",
        lambda w: train(w, "--out", str(Path(w.run()).parent), "--name", "finished"),
        "exists",
    ),
    Case(
        "train: --name of a run another writer holds",
        lambda w: train(w, "--name", Path(w.claimed(str(Path(w.out) / "busy"))).name),
        f"pid {os.getpid()} on host",
    ),
    Case(
        "train: --resume of a folder that is no run",
        lambda w: ["train", "--resume", w.tmp.as_posix()],
        "no config.yaml",
    ),
    Case("train: --resume of a finished run", lambda w: ["train", "--resume", w.run()], "already finished"),
    Case(
        "train: --resume while the run's process is alive",
        lambda w: ["train", "--resume", w.claimed(w.resumable()), "--quiet"],
        f"pid {os.getpid()} on host",
    ),
    Case(
        "train: --resume of a run written on another host",
        lambda w: ["train", "--resume", w.resumable(owned_elsewhere), "--quiet"],
        "other-machine",
    ),
    Case(
        "train: --resume, config.yaml cut short",
        lambda w: ["train", "--resume", w.resumable(cut("config.yaml"))],
        "config.yaml",
    ),
    Case(
        "train: --resume, config.yaml not UTF-8",
        lambda w: ["train", "--resume", w.resumable(replace("config.yaml", b"model: r\xe9seau\n"))],
        "config.yaml",
    ),
    Case(
        "train: --resume, status.json cut short",
        lambda w: ["train", "--resume", w.resumable(cut("status.json", 12))],
        "status.json",
    ),
    Case(
        "train: --resume, last.pt cut short",
        lambda w: ["train", "--resume", w.resumable(cut("last.pt", 3000))],
        "last.pt",
    ),
    Case(
        "train: --resume, last.pt of another model",
        lambda w: ["train", "--resume", w.resumable(other_model("last.pt", "model")), "--quiet"],
        "last.pt",
    ),
    Case(
        "train: --resume, last.pt without its random state",
        lambda w: ["train", "--resume", w.resumable(drop_key("last.pt", "rng")), "--quiet"],
        "last.pt",
    ),
    Case(
        "train: --resume, history.csv not UTF-8",
        lambda w: ["train", "--resume", w.resumable(replace("history.csv", b"epoch,phase\n\xff\xfe\n")), "--quiet"],
        "history.csv",
    ),
    # evaluate
    Case(
        "evaluate: a run directory that is not there", lambda w: ["evaluate", w.path("gone"), "--data", w.data], "gone"
    ),
    Case("evaluate: an unfinished run", lambda w: ["evaluate", w.resumable(), "--data", w.data], "did not finish"),
    Case(
        "evaluate: a diverged run",
        lambda w: ["evaluate", w.run(status('{"status": "diverged", "epoch": 2}')), "--data", w.data],
        "diverged",
    ),
    Case(
        "evaluate: model.pt missing",
        lambda w: ["evaluate", w.run(remove("model.pt")), "--data", w.data],
        "model.pt: no such file",
    ),
    Case(
        "evaluate: model.pt cut short",
        lambda w: ["evaluate", w.run(cut("model.pt", 500)), "--data", w.data],
        "model.pt is damaged",
    ),
    Case(
        "evaluate: model.pt of another model",
        lambda w: ["evaluate", w.run(other_model()), "--data", w.data],
        "model.pt does not fit",
    ),
    Case(
        "evaluate: metrics.json cut short",
        lambda w: ["evaluate", w.run(cut("metrics.json")), "--data", w.data],
        "metrics.json",
    ),
    Case(
        "evaluate: status.json a list", lambda w: ["evaluate", w.run(status("[1, 2]")), "--data", w.data], "status.json"
    ),
    Case(
        "evaluate: config.yaml a list",
        lambda w: ["evaluate", w.run(replace("config.yaml", b"- 1\n")), "--data", w.data],
        "config.yaml",
    ),
    Case(
        "evaluate: config.yaml with an unknown key",
        lambda w: ["evaluate", w.run(config_line("colour: red")), "--data", w.data],
        "config.yaml",
    ),
    Case(
        "evaluate: config.yaml with image size -3",
        lambda w: ["evaluate", w.run(config_line("image_size: -3")), "--data", w.data],
        "config.yaml",
    ),
    Case("evaluate: --data that is not there", lambda w: ["evaluate", w.run(), "--data", w.path("nowhere")], "nowhere"),
    Case(
        "evaluate: --data with a class the run never learned",
        lambda w: ["evaluate", w.run(), "--data", str(make_class_folders(w.tmp / "other", {"COVID": 2, "NORMAL": 2}))],
        "COVID",
    ),
    Case(
        "evaluate: --tta -1",
        lambda w: ["evaluate", w.run(), "--data", w.data, "--tta", "-1"],
        "--tta",
    ),
    Case(
        "evaluate: the run's own training images",
        lambda w: ["evaluate", w.run(), "--data", str(Path(w.data) / "train")],
        expect=HANDLED,
        code=0,
        check=says("images trained", "this run", "on the other"),
    ),
    # predict
    Case("predict: an image that is not there", lambda w: ["predict", w.run(), w.path("x.jpeg")], "x.jpeg"),
    Case("predict: a folder without images", lambda w: ["predict", w.run(), w.folder("blank")], "no images"),
    Case("predict: a corrupt image", lambda w: ["predict", w.run(), w.file("scan.jpeg", b"\xff\xd8junk")], "scan.jpeg"),
    Case(
        "predict: a corrupt image beside a good one, with --on-bad-image skip",
        lambda w: [
            "predict",
            w.run(),
            w.file("scan.jpeg", b"\xff\xd8junk"),
            str(next((Path(w.data) / "train" / "NORMAL").iterdir())),
            "--on-bad-image",
            "skip",
            "--allow-overlap",
        ],
        expect=HANDLED,
        code=0,
        check=says("scan.jpeg"),
    ),
    Case("predict: --cam is a file", lambda w: ["predict", w.run(), w.data, "--cam", w.file("cam")], "cam"),
    Case("predict: model.pt of another model", lambda w: ["predict", w.run(other_model()), w.data], "model.pt"),
    Case("predict: --tta -1", lambda w: ["predict", w.run(), w.data, "--tta", "-1"], "--tta"),
    Case(
        "predict: the run's own training images",
        lambda w: ["predict", w.run(), str(Path(w.data) / "train" / "NORMAL")],
        expect=HANDLED,
        code=0,
        check=says("images trained or validated this run"),
    ),
    # export
    Case("export: --format bogus", lambda w: ["export", w.run(), "--format", "bogus"], "bogus"),
    Case(
        "export: --out is a file",
        lambda w: ["export", w.run(), "--format", "torchscript", "--out", w.file("exported")],
        "exported",
    ),
    Case(
        "export: --out is read-only",
        lambda w: ["export", w.run(), "--format", "torchscript", "--out", w.read_only("locked-export")],
        "locked-export",
    ),
    Case(
        "export: model.pt of another model",
        lambda w: ["export", w.run(other_model()), "--format", "torchscript"],
        "model.pt",
    ),
    Case("export: an unfinished run", lambda w: ["export", w.resumable(), "--format", "torchscript"], "did not finish"),
    # compare
    Case("compare: a run that is not there", lambda w: ["compare", w.run(), w.path("gone")], "gone"),
    Case("compare: --out is a file", lambda w: ["compare", w.run(), "--out", w.file("compared")], "compared"),
    Case("compare: metrics.json cut short", lambda w: ["compare", w.run(cut("metrics.json"))], "metrics.json"),
    Case("compare: an unfinished run", lambda w: ["compare", w.resumable()], "did not finish"),
    # report
    Case("report: a study folder that is not there", lambda w: ["report", w.path("study")], "study"),
    Case("report: a folder with no runs", lambda w: ["report", w.folder("vacant")], "no finished runs"),
    Case(
        "report: a study whose run has status.json cut short",
        lambda w: ["report", str(Path(w.copy(w.shared.run, cut("status.json", 12), "study/runs/r")).parents[1])],
        "status.json",
    ),
    # sweep and study
    Case("sweep: a study file that is not there", lambda w: ["sweep", w.path("s.yaml")], "s.yaml"),
    Case(
        "sweep: a study file that is binary",
        lambda w: ["sweep", w.file("s.yaml", bytes(range(256)))],
        "s.yaml",
    ),
    Case(
        "sweep: a study file not UTF-8",
        lambda w: ["sweep", w.file("s.yaml", b"name: r\xe9sum\xe9\n")],
        "s.yaml",
    ),
    Case(
        "sweep: an unknown key", lambda w: ["sweep", w.study("name: s\ndata: DATA\ncolour: red\nruns: []\n")], "colour"
    ),
    Case(
        "sweep: --workers 0",
        lambda w: ["sweep", w.study("name: s\ndata: DATA\nruns: []\n"), "--workers", "0"],
        "--workers",
    ),
    Case(
        "sweep: --set epochs=-1",
        lambda w: ["sweep", w.study("name: s\ndata: DATA\nruns:\n  - {model: scratch_cnn}\n"), "--set", "epochs=-1"],
        "epochs",
    ),
    Case(
        "sweep: --data that is not there",
        lambda w: ["sweep", w.study("name: s\ndata: DATA\nruns:\n  - {model: scratch_cnn}\n"), "--data", "nowhere"],
        "nowhere",
    ),
    Case("study: a study file that is not there", lambda w: ["study", w.path("s.yaml")], "s.yaml"),
    Case(
        "study: --set lr=nan",
        lambda w: ["study", w.study("name: s\ndata: DATA\nruns:\n  - {model: scratch_cnn}\n"), "--set", "lr=nan"],
        "lr",
    ),
    # models
    Case("models: --image-size 0", lambda w: ["models", "--image-size", "0"], "--image-size"),
    Case("models: --image-size -5", lambda w: ["models", "--image-size", "-5"], "--image-size"),
    Case(
        "models: --image-size 100000",
        lambda w: ["models", "--image-size", "100000"],
        "--image-size",
    ),
    # data inspect
    Case("data inspect: a path that is not there", lambda w: ["data", "inspect", w.path("nowhere")], "nowhere"),
    Case(
        "data inspect: a class folder linked into its sibling",
        lambda w: ["data", "inspect", w.root(link_into_sibling)],
        "reached twice",
    ),
    Case("data inspect: --labels bogus", lambda w: ["data", "inspect", w.data, "--labels", "bogus"], "--labels"),
    Case(
        "data inspect: --split-seed -1",
        lambda w: ["data", "inspect", w.data, "--split-seed", "-1"],
        "--split-seed",
    ),
    Case(
        "data inspect: an unlistable class folder",
        lambda w: ["data", "inspect", w.data],
        "cannot list folder",
        monkeypatch=lambda w, patch: unlistable(patch, str(Path(w.data) / "train" / "NORMAL")),
    ),
    Case(
        "data inspect: identical bytes under two labels",
        lambda w: ["data", "inspect", w.root(twin_under_other_label)],
        expect=HANDLED,
        code=0,
        check=says("1 byte-identical images under different labels", stream="out"),
    ),
    Case(
        "data inspect: .npz images (N, H, W, 1)",
        lambda w: ["data", "inspect", w.npz(shape=(28, 28, 1)), "--json"],
        expect=HANDLED,
        code=0,
        check=lambda w, result: json.loads(result.out)["images"] == 16 or pytest.fail(result.out[-500:]),
    ),
]


# --- running a case ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Shared:
    from cxrlab.training import loop
    from cxrlab.training.config import TrainConfig

    base = tmp_path_factory.mktemp("hostile")
    data = make_dataset_root(base / "data", n_train=16, size=SIZE)
    settings = dict(data=str(data), model="scratch_cnn", mode="scratch", epochs=2, image_size=SIZE, batch_size=8)
    run = loop.fit(
        TrainConfig(**settings, out=str(base / "runs"), name="finished"), show_progress=False, log=lambda line: None
    )

    def killed(*args, **kwargs):
        raise RuntimeError("killed before scoring")

    # A run killed after its epochs and before scoring: status running, last.pt kept.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "_finish", killed)
        with pytest.raises(RuntimeError):
            loop.fit(
                TrainConfig(**settings, out=str(base / "runs"), name="interrupted"),
                show_progress=False,
                log=lambda line: None,
            )
    return Shared(data=data, run=run, resumable=base / "runs" / "interrupted")


def _files(*folders: Path) -> dict[Path, float]:
    found = {}
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                found[path] = path.stat().st_mtime_ns
    return found


def _claims_a_result(path: Path) -> bool:
    if path.name in RESULT_NAMES or path.name.startswith("eval-"):
        return True
    if path.name == "status.json":
        try:
            return json.loads(path.read_text()).get("status") == "finished"
        except (OSError, ValueError):
            return False
    return False


def _params():
    for case in CASES:
        marks = [pytest.mark.slow] if case.slow else []
        yield pytest.param(case, id=case.name, marks=marks)


@pytest.mark.parametrize("case", list(_params()))
def test_hostile_input(case: Case, shared: Shared, tmp_path, cli, monkeypatch):
    if case.name == "train: --device cuda without CUDA" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(tmp_path)
    world = World(tmp=tmp_path, shared=shared)
    with world.held:
        argv = case.argv(world)
        before = _files(tmp_path, shared.run.parent)
        if case.monkeypatch is not None:
            case.monkeypatch(world, monkeypatch)
        result = cli(*argv)
        monkeypatch.undo()
    after = _files(tmp_path, shared.run.parent)

    assert "Traceback" not in result.err + result.out, result.err[-3000:]
    assert result.code == case.code, (result.code, result.err[-1500:])
    if case.expect == ONE_LINE:
        lines = result.err.strip().splitlines()
        assert len(lines) == 1, result.err
        names = case.names(world) if callable(case.names) else case.names
        assert names in lines[0], lines[0]
        changed = [p for p, stamp in after.items() if before.get(p) != stamp]
        assert not [p for p in changed if _claims_a_result(p)], f"a failed command left {changed}"
    else:
        assert case.check is not None
        case.check(world, result)


def test_the_table_covers_every_command_with_sixty_cases():
    assert len(CASES) >= 60
    assert {case.command for case in CASES} == COMMANDS
    assert len({case.name for case in CASES}) == len(CASES), "two cases share a name"
    assert {ONE_LINE, HANDLED} == {case.expect for case in CASES}


# --- two real processes ------------------------------------------------------------------------

ALIAS_BOMB = """\
name: bomb
data: DATA
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
runs: *i
"""


def _bounded(memory: int):
    def apply() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))

    return apply


@pytest.mark.slow
def test_a_yaml_alias_bomb_is_refused_at_once_with_bounded_memory(shared, tmp_path):
    """Nine levels of nine aliases: 387 million strings if expanded. Run in its own process
    under a 6 GB address-space limit (PyTorch's libraries alone map about 3 GB) and a time
    limit, so that a loader which expands it fails this test instead of the machine. The
    process's CPU seconds, not its wall time, are held to a bound: a loaded machine stretches
    the wall time of the imports alone past any fixed figure."""
    study = tmp_path / "bomb.yaml"
    study.write_text(ALIAS_BOMB.replace("DATA", str(shared.data)))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "cxrlab", "sweep", str(study)],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            preexec_fn=_bounded(6 * 1024**3),
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the alias bomb was still being expanded after 120 s")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-1500:]
    assert len(result.stderr.strip().splitlines()) == 1 and "bomb.yaml" in result.stderr
    assert cpu < 30, f"refused after {cpu:.0f} CPU seconds"


@pytest.mark.slow
def test_two_trainings_into_one_owned_directory_from_another_process(shared, tmp_path, cli):
    """The concurrent case with a real second process: it owns the directory, the command
    line is refused with its pid and host."""
    script = (
        "import sys, time\nfrom cxrlab.training.claim import claim_run_dir\n"
        "claim = claim_run_dir(sys.argv[1])\nprint('claimed', flush=True)\ntime.sleep(600)\n"
    )
    run_dir = tmp_path / "runs" / "contested"
    holder = subprocess.Popen([sys.executable, "-c", script, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        world = World(tmp=tmp_path, shared=shared)
        result = cli(*train(world, "--name", "contested"))
    finally:
        holder.kill()
        holder.wait(timeout=60)
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1
    assert f"pid {holder.pid} on host {socket.gethostname()}" in result.err
    assert not (run_dir / "config.yaml").exists()
