"""What every epoch of a run needs: the data, the model, the device, the records so far."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.optim.swa_utils import AveragedModel

from cxrlab.core.errors import CxrlabError
from cxrlab.data.dataset import Dataset
from cxrlab.models.registry import Classifier
from cxrlab.training.config import TrainConfig
from cxrlab.training.distributed import SINGLE, Ranks, shard
from cxrlab.training.external import LabelledSet
from cxrlab.training.phases import Phase
from cxrlab.training.records import EpochRecord
from cxrlab.training.rundir import BackgroundWrites, RunWriter

if TYPE_CHECKING:  # the fit loop imports it only for a --tensorboard run
    from cxrlab.training.tensorboard import TensorBoardLogger


@dataclass
class Context:
    config: TrainConfig
    data: Dataset
    model: Classifier
    device: torch.device
    writer: RunWriter
    class_weights: torch.Tensor | None
    weights_id: str
    show_progress: bool
    history: list[EpochRecord] = field(default_factory=list)
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # "<split>" and "<split>_labels"
    feature_seconds: float = 0.0
    feature_cpu_seconds: float = 0.0
    load_at_start: float | None = None  # the machine's 1-minute load average when training began
    background: BackgroundWrites = field(default_factory=BackgroundWrites)  # checkpoint writes off the loop
    backbone_digest: str | None = None  # of the frozen backbone a head phase trains on
    val_auc: float | None = None  # of the last validation pass, for the epoch's record
    tensorboard: TensorBoardLogger | None = None  # when asked for
    ranks: Ranks = SINGLE
    # External sets and the labelled target sample, by name; "val" or "external:<name>" chooses.
    external: dict[str, LabelledSet] = field(default_factory=dict)
    selection_set: str = "val"
    average: AveragedModel | None = None  # the moving average of a network phase's weights (--ema)
    probe_state: dict | None = None  # the end of the head phase, for WiSE-FT (--wise)
    best_on_disk: int | None = None  # the kept epoch whose weights model.pt holds (or is being written with)

    @property
    def target(self) -> LabelledSet | None:
        """The labelled target sample that chooses, if any."""
        return next((s for s in self.external.values() if s.split == self.selection_set), None)

    def steps_per_epoch(self, phase: Phase) -> int:
        """Optimizer steps in one epoch of ``phase``, as the schedule must count them: full
        batches only (drop_last), over this rank's shard when the images are sharded across ranks."""
        n = self.data.count("train")
        if not phase.on_features:
            n = len(shard(np.arange(n), self.ranks))
        return max(1, n // self.config.batch_size)


def check_splits(data: Dataset) -> None:
    for split in ("train", "val", "test"):
        if data.count(split) == 0:
            raise CxrlabError(
                f"the {split} split of {data.location} is empty: add images or lower the held-out fractions"
            )
    if len(np.unique(data.labels[data.indices("train")])) < 2:
        raise CxrlabError(f"the train split of {data.location} holds one class: a classifier needs two or more")


def class_weights(config: TrainConfig, data: Dataset, device: torch.device) -> torch.Tensor | None:
    """Inverse class frequencies of the train split, so a rare class weighs as much in the loss."""
    if config.class_weights == "none":
        return None
    counts = np.bincount(data.labels[data.indices("train")], minlength=len(data.classes)).astype(np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32, device=device)
