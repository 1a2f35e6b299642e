"""What a mode trains, phase by phase, and which epoch's weights are kept.

A ``head`` phase trains only the new head on cached features of the frozen backbone
(``frozen`` mode, and the first phase of ``gradual``); a ``network`` phase trains through
the images (``finetune``, ``scratch``, and the second phase of ``gradual`` with a lower
learning rate for the backbone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cxrlab.training.config import TrainConfig


class Diverged(Exception):
    """The training or validation loss stopped being a finite number."""

    def __init__(self, epoch: int, step: int, loss: float):
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(f"loss became {loss} at epoch {epoch}, step {step}")


@dataclass
class Phase:
    name: str  # "head" or "network"
    epochs: int
    lr: float
    on_features: bool  # head phases train on cached features unless feature_cache is off

    @property
    def head_only(self) -> bool:
        return self.name == "head"


def plan_phases(config: TrainConfig) -> list[Phase]:
    """The phases of a ``resolved()`` config (which sets every epoch count and learning rate)."""
    epochs, lr = config.epochs, config.lr
    assert epochs is not None and lr is not None, "plan_phases needs a resolved() config"
    if config.mode == "frozen":
        return [Phase("head", epochs, lr, on_features=config.feature_cache)]
    if config.mode == "gradual":
        head_epochs, head_lr = config.head_epochs, config.head_lr
        assert head_epochs is not None and head_lr is not None, "plan_phases needs a resolved() config"
        phases = [Phase("head", head_epochs, head_lr, on_features=config.feature_cache)]
        return [p for p in phases if p.epochs > 0] + [Phase("network", epochs, lr, on_features=False)]
    return [Phase("network", epochs, lr, on_features=False)]


@dataclass
class Selection:
    """The best epoch so far by the selection metric."""

    metric: str
    score: float = math.inf
    epoch: int = 0
    state: dict | None = None

    def offer(self, epoch: int, val_loss: float, val_acc: float, model: torch.nn.Module) -> bool:
        score = val_loss if self.metric == "val_loss" else -val_acc
        if not score < self.score:
            return False
        self.score, self.epoch = score, epoch
        self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return True
