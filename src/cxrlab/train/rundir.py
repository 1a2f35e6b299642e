"""The run directory: the one place a run's records are written, and the one loader.

    <out>/<run_id>/config.yaml      every resolved setting, data fingerprint, versions
                   status.json      running | finished | diverged | failed (+ pid, host)
                   split.csv        which image went to train / val / test
                   history.csv      one row per epoch
                   metrics.json     test metrics of the selected checkpoint
                   predictions.csv  path, split, label, p_<class>... for val and test
                   model.pt         best checkpoint by the selection metric
                   last.pt          resumable state after the last finished epoch

Every file is written atomically. A run is finished only when ``status.json`` says so,
and that is written last: a run killed half way is never mistaken for a finished one.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrlab.errors import CxrlabError
from cxrlab.io import read_json, read_yaml, write_json, write_text, write_yaml
from cxrlab.models.weights import load_plain_tensors

HISTORY_COLUMNS = ["epoch", "phase", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
FINISHED, RUNNING, DIVERGED, FAILED = "finished", "running", "diverged", "failed"


def safe_run_id(text: str) -> str:
    """A folder name from user text that cannot climb out of the output folder."""
    cleaned = re.sub(r"[^A-Za-z0-9._=+-]+", "-", text).strip(".-")
    return cleaned[:120] or "run"


def new_run_id(model: str, mode: str) -> str:
    """``<model>-<mode>-<time>-<random>``: readable, and unique even for two runs started in the
    same second by one process."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return safe_run_id(f"{model}-{mode}-{stamp}-{secrets.token_hex(3)}")


class RunWriter:
    """Writes the files of one run directory; a disabled writer (a distributed run's other
    ranks) writes nothing, so that the directory is written once."""

    def __init__(self, path: Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def status(self, status: str, **extra: Any) -> None:
        self._json(
            "status.json",
            {"status": status, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), **extra},
        )

    def config(self, config: dict) -> None:
        if self.enabled:
            write_yaml(self.path / "config.yaml", config)

    def split(
        self, paths: list[str], splits: np.ndarray, labels: np.ndarray, patients: list[str], classes: list[str]
    ) -> None:
        self._text(
            "split.csv",
            lambda: _csv(
                ["path", "split", "label", "patient"],
                ([p, s, classes[int(y)], pt] for p, s, y, pt in zip(paths, splits, labels, patients)),
            ),
        )

    def history(self, rows: list[dict]) -> None:
        self._text(
            "history.csv", lambda: _csv(HISTORY_COLUMNS, ([r.get(c, "") for c in HISTORY_COLUMNS] for r in rows))
        )

    def predictions(
        self,
        paths: list[str],
        splits: list[str],
        labels: np.ndarray,
        probs: np.ndarray,
        classes: list[str],
        name: str = "predictions.csv",
    ) -> None:
        header = ["path", "split", "label"] + [f"p_{c}" for c in classes]
        self._text(
            name,
            lambda: _csv(
                header,
                (
                    [p, s, classes[int(y)]] + [f"{v:.6f}" for v in row]
                    for p, s, y, row in zip(paths, splits, labels, probs)
                ),
            ),
        )

    def metrics(self, metrics: dict, name: str = "metrics.json") -> None:
        self._json(name, metrics)

    def model(self, state: dict, meta: dict, name: str = "model.pt") -> None:
        if self.enabled:
            save_tensors(self.path / name, {"state_dict": state, "meta": meta})

    def _json(self, name: str, data: dict) -> None:
        if self.enabled:
            write_json(self.path / name, data)

    def _text(self, name: str, render) -> None:
        if self.enabled:  # render lazily: other ranks skip the work too
            write_text(self.path / name, render())


def save_tensors(path: Path, payload: dict) -> None:
    from cxrlab.io import atomic_path

    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_tensors(path: Path) -> dict:
    """A checkpoint written by cxrlab, read with ``weights_only=True`` (it holds no code)."""
    payload = load_plain_tensors(path)
    if not isinstance(payload, dict):
        raise CxrlabError(f"{path} is not a cxrlab checkpoint (it holds a {type(payload).__name__}): rerun the run")
    return payload


def _csv(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@dataclass
class RunRecord:
    """A run directory as read back: what every layer above ``train`` uses."""

    path: Path
    config: dict
    status: dict
    metrics: dict
    history: list[dict]

    @property
    def finished(self) -> bool:
        return self.status.get("status") == FINISHED

    @property
    def diverged(self) -> bool:
        return self.status.get("status") == DIVERGED

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def classes(self) -> list[str]:
        return list(self.config["data_info"]["classes"])

    @property
    def threshold(self) -> float | None:
        return self.metrics.get("threshold")

    def predictions(self, name: str = "predictions.csv") -> list[dict[str, str]]:
        return read_csv(self.path / name)

    def prediction_arrays(
        self, split: str = "test", name: str = "predictions.csv"
    ) -> tuple[list[str], np.ndarray, np.ndarray]:
        """``(paths, labels (N,), probs (N, C))`` of one split of the saved predictions."""
        rows = [r for r in self.predictions(name) if r["split"] == split]
        classes = self.classes
        labels = np.array([classes.index(r["label"]) for r in rows], dtype=np.int64)
        probs = np.array([[float(r[f"p_{c}"]) for c in classes] for r in rows], dtype=np.float64).reshape(
            len(rows), len(classes)
        )
        return [r["path"] for r in rows], labels, probs

    def load_model(self, name: str = "model.pt"):
        """The selected checkpoint as a ready ``Classifier`` in eval mode."""
        from cxrlab.models.registry import build_model

        payload = load_tensors(self.path / name)
        model = build_model(self.config["model"], num_classes=len(self.classes))
        model.load_state_dict(payload["state_dict"])
        return model.eval()


def run_status(path: str | os.PathLike) -> str:
    """``running``, ``finished``, ``diverged`` or ``failed``; ``unknown`` without a status file."""
    status_path = Path(path) / "status.json"
    return str(read_json(status_path).get("status", "unknown")) if status_path.exists() else "unknown"


def load_run(path: str | os.PathLike, require_finished: bool = True) -> RunRecord:
    """Read a run directory; a run that did not finish is refused unless asked for."""
    path = Path(path)
    if not (path / "config.yaml").exists():
        raise CxrlabError(f"{path} is not a cxrlab run directory (no config.yaml)")
    status = read_json(path / "status.json") if (path / "status.json").exists() else {"status": "unknown"}
    if require_finished and status.get("status") == DIVERGED:
        raise CxrlabError(f"run {path} diverged at epoch {status.get('epoch')}: rerun it with a lower --lr")
    if require_finished and status.get("status") != FINISHED:
        raise CxrlabError(f"run {path} did not finish (status: {status.get('status')}): rerun it or use --resume")
    metrics = read_json(path / "metrics.json") if (path / "metrics.json").exists() else {}
    history = []
    if (path / "history.csv").exists():
        for row in read_csv(path / "history.csv"):
            history.append({k: (_number(v) if k not in ("phase",) else v) for k, v in row.items()})
    return RunRecord(path=path, config=read_yaml(path / "config.yaml"), status=status, metrics=metrics, history=history)


def list_runs(folder: str | os.PathLike, finished_only: bool = True) -> list[RunRecord]:
    """Every run directory directly under ``folder`` (sorted by name)."""
    folder = Path(folder)
    runs = []
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if (child / "config.yaml").exists():
            run = load_run(child, require_finished=False)
            if run.finished or not finished_only:
                runs.append(run)
    return runs


def _number(text: str):
    try:
        value = float(text)
    except ValueError:
        return text
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value
