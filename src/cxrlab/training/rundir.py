"""The run directory: the one place a run's records are written (``records`` reads them back).

    <out>/<run_id>/config.yaml      every resolved setting, data fingerprint, versions
                   status.json      running | finished | diverged | failed (+ pid, host)
                   split.csv        which image went to train / val / test (+ SHA-1)
                   history.csv      one row per epoch
                   metrics.json     test metrics of the selected checkpoint
                   predictions.csv  path, split, label, p_<class>... for val and test
                   model.pt         best checkpoint by the selection metric
                   last.pt          resumable state after the last finished epoch

Every file is written atomically. A run is finished only when ``status.json`` says so,
and that is written last: a run killed half way is never mistaken for a finished one. While
a run writes, ``owner.json`` names the one process that may (``claim``).
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import socket
import time
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import atomic_path, make_dir, write_json, write_text, write_yaml
from cxrlab.models.weights import load_plain_tensors
from cxrlab.training.records import HISTORY_COLUMNS, TARGET_VAL_COLUMNS, EpochRecord
from cxrlab.training.run_metrics import RunMetrics


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
            make_dir(self.path)

    def status(self, status: str, **extra: Any) -> None:
        self._json(
            "status.json",
            {"status": status, "pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), **extra},
        )

    def config(self, config: dict) -> None:
        if self.enabled:
            write_yaml(self.path / "config.yaml", config)

    def split(
        self,
        paths: list[str],
        splits: np.ndarray,
        labels: np.ndarray,
        patients: list[str],
        classes: list[str],
        digests: list[str] | None = None,
    ) -> None:
        """split.csv; ``digests`` (SHA-1 of each file's bytes) let evaluate and predict find a
        training image under another name."""
        digests = digests if digests is not None else [""] * len(paths)
        self._text(
            "split.csv",
            lambda: _csv(
                ["path", "split", "label", "patient", "sha1"],
                ([p, s, classes[int(y)], pt, d] for p, s, y, pt, d in zip(paths, splits, labels, patients, digests)),
            ),
        )

    def history(self, rows: list[EpochRecord]) -> None:
        columns = HISTORY_COLUMNS + [c for c in TARGET_VAL_COLUMNS if any(getattr(r, c) is not None for r in rows)]
        self._text("history.csv", lambda: _csv(columns, (_history_cells(r, columns) for r in rows)))

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

    def metrics(self, metrics: RunMetrics | dict, name: str = "metrics.json") -> None:
        self._json(name, metrics.as_json() if isinstance(metrics, RunMetrics) else metrics)

    def model(self, state: dict, meta: dict, name: str = "model.pt") -> None:
        if self.enabled:
            save_tensors(self.path / name, {"state_dict": state, "meta": meta})

    def _json(self, name: str, data: dict) -> None:
        if self.enabled:
            write_json(self.path / name, data)

    def _text(self, name: str, render) -> None:
        if self.enabled:  # render lazily: other ranks skip the work too
            write_text(self.path / name, render())


class BackgroundWrites:
    """One writer thread: files are written in the order they were handed over."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: list[Future] = []

    def submit(self, path: Path, payload: dict) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cxrlab-checkpoint")
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        self._pending.append(self._pool.submit(save_tensors, path, payload))

    def drain(self) -> None:
        """Wait until every file handed over is on disk; re-raise a failed write."""
        pending, self._pending = self._pending, []
        for future in pending:
            future.result()


def save_tensors(path: Path, payload: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_tensors(path: Path) -> dict:
    """A checkpoint written by cxrlab, read with ``weights_only=True`` (it holds no code)."""
    path = Path(path)
    if not path.is_file():
        raise CxrlabError(f"cannot read {path}: no such file (the run never saved it, or it was removed)")
    if not zipfile.is_zipfile(path):
        # torch.save writes a zip archive; a file that is not one was cut short or overwritten.
        raise CxrlabError(f"{path} is damaged (not a complete torch checkpoint: truncated?): rerun the run")
    payload = load_plain_tensors(path)
    if not isinstance(payload, dict):
        raise CxrlabError(f"{path} is not a cxrlab checkpoint (it holds a {type(payload).__name__}): rerun the run")
    return payload


def load_state_checked(model: torch.nn.Module, state: Any, path: Path, what: str) -> None:
    """Load ``state`` into ``model``; a state of another architecture (or none) is one line."""
    check_state_fits(model, state, path, what)
    model.load_state_dict(state)


def check_state_fits(model: torch.nn.Module, state: Any, path: Path, what: str) -> None:
    """Whether ``state`` (read from ``path``) holds exactly ``model``'s tensors; else one line."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CxrlabError(f"{path} holds no state dict of tensors: it is not a cxrlab checkpoint; rerun the run")
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or mismatched:
        if mismatched:
            k = mismatched[0]
            detail = f"{k} has shape {tuple(state[k].shape)}, {what} needs {tuple(expected[k].shape)}"
        elif missing:
            detail = f"{len(missing)} tensors of {what} missing, e.g. {missing[0]}"
        else:
            detail = f"{len(unexpected)} tensors {what} does not have, e.g. {unexpected[0]}"
        raise CxrlabError(f"{path} does not fit {what}: {detail}; the file comes from another run or model")


def _history_cells(row: EpochRecord, columns: list[str]) -> list:
    values = row.model_dump()
    values["lr"] = f"{row.lr:.3g}"  # the rate as the epoch log shows it
    return [values[c] for c in columns]


def _csv(header: list[str], rows) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()
