"""A run directory read back as typed records: the one loader every layer above training uses.

``config.yaml`` is a ``RunConfig`` (the resolved ``TrainConfig`` plus what the run found:
its data, weights and environment), ``metrics.json`` a ``RunMetrics``, ``status.json`` a
``RunStatus`` and each row of ``history.csv`` an ``EpochRecord``. A misspelt key fails where
the record is written or read, not when a report renders.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, ValidationError, field_validator

from cxrlab.core.decision import decide, positive_index
from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import read_record_json, read_yaml
from cxrlab.training.config import TrainConfig
from cxrlab.training.run_metrics import (
    Record,
    RunMetrics,
    SplitOverlap,
)

FINISHED, RUNNING, DIVERGED, FAILED, UNKNOWN = "finished", "running", "diverged", "failed", "unknown"
HISTORY_COLUMNS = [
    "epoch",
    "phase",
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "lr",
    "seconds",
    "cpu_seconds",
    "val_auc",
]
# Written only by runs that choose on a labelled target sample (--target-val).
TARGET_VAL_COLUMNS = ["target_val_loss", "target_val_acc"]


class DataInfo(Record):
    """What the run's data turned out to be."""

    location: str
    kind: str
    classes: list[str]
    fingerprint: str
    split_fingerprint: str
    n: dict[str, int]
    split_notes: list[str] = Field(default_factory=list)
    skipped_images: list[dict[str, str]] = Field(default_factory=list)
    ignored_files: int = 0
    test_overlap: SplitOverlap | None = None  # None: recorded before overlap was checked


class RunConfig(TrainConfig):
    """``config.yaml``: every resolved setting, plus the data, weights and environment found."""

    data_info: DataInfo
    weights_id: str
    environment: dict[str, Any] = Field(default_factory=dict)

    def setting(self, name: str) -> Any:
        """One setting by its field name (for tables that list settings by name)."""
        return getattr(self, name)

    def train_config(self) -> TrainConfig:
        """The settings alone, as a run is started with them."""
        return TrainConfig(**self.model_dump(include=set(TrainConfig.model_fields)))


class RunStatus(Record):
    """``status.json``: written first as running, last as finished, diverged or failed."""

    status: str = UNKNOWN
    pid: int | None = None
    host: str | None = None
    time: float | None = None
    # A diverged run: where the loss blew up and the epoch whose checkpoint was kept.
    epoch: int | None = None
    step: int | None = None
    loss: str | None = None
    best_epoch: int | None = None


class EpochRecord(Record):
    """One row of ``history.csv``."""

    epoch: int
    phase: str
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float
    seconds: float
    cpu_seconds: float | None = None  # process user + system time of the epoch
    val_auc: float | None = None  # None in histories written before it was recorded
    target_val_loss: float | None = None
    target_val_acc: float | None = None

    @field_validator("val_auc", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        # history.csv writes a missing AUC as an empty cell; an undefined one (one class) as nan.
        return None if value in ("", None) else value

    @property
    def selection_loss(self) -> float:
        """The loss on the set that chooses: the labelled target sample's when there is one."""
        return self.target_val_loss if self.target_val_loss is not None else self.val_loss


@dataclass
class RunRecord:
    """A run directory as read back."""

    path: Path
    config: RunConfig
    status: RunStatus
    metrics: RunMetrics | None  # None until the run finished
    epochs: list[EpochRecord]

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def finished(self) -> bool:
        return self.status.status == FINISHED

    @property
    def diverged(self) -> bool:
        return self.status.status == DIVERGED

    @property
    def classes(self) -> list[str]:
        return list(self.config.data_info.classes)

    @property
    def threshold(self) -> float | None:
        return self.metrics.threshold if self.metrics is not None else None

    @property
    def positive(self) -> int:
        return positive_index(self.classes)

    def decide(self, probs: np.ndarray) -> np.ndarray:
        """Class indices the run predicts: at its validation-chosen threshold for two classes,
        the most probable class otherwise."""
        return decide(probs, self.threshold if len(self.classes) == 2 else None, self.positive)

    @property
    def scores(self) -> RunMetrics:
        """The metrics of a finished run (an error for one that has none)."""
        if self.metrics is None:
            raise CxrlabError(f"run {self.path} has no metrics.json: it did not finish")
        return self.metrics

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

    @property
    def temperature(self) -> float:
        """The softmax temperature the run's probabilities use (1 when none was fitted)."""
        return (self.metrics.temperature if self.metrics is not None else None) or 1.0

    def load_model(self, name: str = "model.pt"):
        """The selected checkpoint as a ready ``Classifier`` in eval mode (it returns logits;
        the run's probabilities are ``softmax(logits / temperature)``)."""
        from cxrlab.models.registry import build_model
        from cxrlab.training.rundir import load_state_checked, load_tensors

        path = self.path / name
        payload = load_tensors(path)
        model = build_model(self.config.model, num_classes=len(self.classes))
        load_state_checked(model, payload.get("state_dict"), path, f"the run's model ({self.config.model})")
        return model.eval()


def read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CxrlabError(f"{path} is damaged (not a UTF-8 CSV file: {str(exc)[:120]}): rerun the run") from exc


def read_status(path: str | os.PathLike) -> RunStatus:
    """The run's ``status.json``; ``unknown`` when there is none."""
    status_path = Path(path) / "status.json"
    if not status_path.exists():
        return RunStatus()
    return _parsed(RunStatus, read_record_json(status_path), status_path)


def run_status(path: str | os.PathLike) -> str:
    """``running``, ``finished``, ``diverged`` or ``failed``; ``unknown`` without a status file."""
    return read_status(path).status


def read_config(path: str | os.PathLike) -> RunConfig:
    config_path = Path(path) / "config.yaml"
    if not config_path.exists():
        raise CxrlabError(f"{path} is not a cxrlab run directory (no config.yaml)")
    return _parsed(RunConfig, read_yaml(config_path), config_path)


def load_run(path: str | os.PathLike, require_finished: bool = True) -> RunRecord:
    """Read a run directory; a run that did not finish is refused unless asked for."""
    path = Path(path)
    config = read_config(path)
    status = read_status(path)
    if require_finished and status.status == DIVERGED:
        raise CxrlabError(f"run {path} diverged at epoch {status.epoch}: rerun it with a lower --lr")
    if require_finished and status.status != FINISHED:
        raise CxrlabError(f"run {path} did not finish (status: {status.status}): rerun it or use --resume")
    metrics_path = path / "metrics.json"
    metrics = _parsed(RunMetrics, read_record_json(metrics_path), metrics_path) if metrics_path.exists() else None
    history_path = path / "history.csv"
    epochs = (
        [_parsed(EpochRecord, row, history_path) for row in read_csv(history_path)] if history_path.exists() else []
    )
    return RunRecord(path=path, config=config, status=status, metrics=metrics, epochs=epochs)


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


def _parsed(record: type[BaseModel], data: Any, source: Path) -> Any:
    try:
        return record.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "the file"
        raise CxrlabError(
            f"{source} is not a record this cxrlab can read ({where}: {error['msg']}): rerun the run"
        ) from exc
