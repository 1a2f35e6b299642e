"""TensorBoard logging of one run (``cxrlab train --tensorboard``).

The fit loop calls ``examples`` once before training, ``epoch`` after every epoch and
``finish`` with the final metrics; the event files go to ``<run_dir>/tensorboard``, so
``tensorboard --logdir runs`` shows every run side by side, and its HParams view lines up
the settings of each run with its test metrics.

Tags: ``loss/train``, ``loss/val``, ``accuracy/train``, ``accuracy/val``, ``lr`` and
``seconds`` per epoch; ``examples/<split>/<class>`` images; ``final/<metric>`` scalars, the
metrics the HParams view shows.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch

from cxrlab.core.errors import CxrlabError
from cxrlab.data.dataset import Dataset
from cxrlab.training.records import EpochRecord
from cxrlab.training.run_metrics import RunMetrics

EXAMPLES_PER_CLASS = 4
EPOCH_SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "lr": "lr",
    "seconds": "seconds",
}
FINAL_METRICS = (
    "test_accuracy",
    "test_loss",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "recall",
    "f1",
    "roc_auc",
    "ece",
    "val_loss",
    "val_accuracy_argmax",
    "train_seconds",
    "best_epoch",
)


class TensorBoardLogger:
    """Writes the event file of one run; ``config_record`` is the run's config.yaml content."""

    def __init__(self, log_dir: str | os.PathLike, config_record: dict):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise CxrlabError("--tensorboard needs the tensorboard package: pip install tensorboard") from exc
        self.log_dir = Path(log_dir)
        self.config_record = config_record
        self.writer = SummaryWriter(log_dir=str(self.log_dir))
        self.closed = False

    def examples(self, dataset: Dataset) -> None:
        """A few images of each class in each split, as the model receives them."""
        for split in ("train", "val", "test"):
            indices = dataset.indices(split)
            for label, name in enumerate(dataset.classes):
                chosen = indices[dataset.labels[indices] == label][:EXAMPLES_PER_CLASS]
                if len(chosen) == 0:
                    continue
                pixels = torch.from_numpy(np.ascontiguousarray(dataset.images[chosen])).unsqueeze(1)
                self.writer.add_images(f"examples/{split}/{name}", pixels, global_step=0, dataformats="NCHW")
        self.writer.flush()

    def epoch(self, row: EpochRecord) -> None:
        """The scalars of one row of history.csv, at step ``row.epoch``."""
        values = row.model_dump()
        for key, tag in EPOCH_SCALARS.items():
            self.writer.add_scalar(tag, float(values[key]), global_step=row.epoch)
        # Flushed every epoch so that the curves of a run that dies half way are still there.
        self.writer.flush()

    def finish(self, record: RunMetrics) -> None:
        """The run's settings with its final metrics, for the HParams view; then close."""
        from torch.utils.tensorboard.summary import hparams

        metrics = record.model_dump()
        final = {
            f"final/{key}": float(metrics[key])
            for key in FINAL_METRICS
            if isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key])
        }
        experiment, session_start, session_end = hparams(hparam_values(self.config_record), final)
        # Written into this run's own event file (SummaryWriter.add_hparams would open a
        # sub-folder per call), so each run directory is one session in the HParams view.
        file_writer = self.writer.file_writer
        assert file_writer is not None  # SummaryWriter opens it in __init__; only close() drops it
        for summary in (experiment, session_start, session_end):
            file_writer.add_summary(summary)
        step = record.best_epoch
        for tag, value in final.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.close()

    def close(self) -> None:
        if not self.closed:
            self.writer.close()
            self.closed = True


def hparam_values(config_record: dict) -> dict[str, bool | int | float | str]:
    """The run's settings that TensorBoard can show: the plain values of config.yaml."""
    values: dict[str, bool | int | float | str] = {}
    for key, value in config_record.items():
        if value is None:
            values[key] = "none"
        elif isinstance(value, (bool, int, float, str)):
            values[key] = value
    return values
