"""Optimisers and learning-rate schedules, as tables of names to constructors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from cxrlab.models.registry import Classifier
from cxrlab.training.config import TrainConfig
from cxrlab.training.phases import Phase

# Adam's weight_decay is L2 in the gradient, the classic formulation the study used; AdamW
# decouples it; SGD uses Nesterov momentum. ``fused`` as torch takes it (None: torch's default).
OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "sgd": lambda groups, lr, config, fused=None: torch.optim.SGD(
        groups, lr=lr, momentum=config.momentum, nesterov=True, fused=fused
    ),
    "adam": lambda groups, lr, config, fused=None: torch.optim.Adam(groups, lr=lr, fused=fused),
    "adamw": lambda groups, lr, config, fused=None: torch.optim.AdamW(groups, lr=lr, fused=fused),
}
# Where the fused implementations run. On a CPU torch otherwise takes its single-tensor loop:
# fused AdamW steps ResNet-18 several times faster there (bench/optimizer_step.py).
FUSED_DEVICES = ("cpu", "cuda")


def _constant(step: int, steps_per_epoch: int, epochs: int, start: int, total: int) -> float:
    return 1.0


def _cosine(step: int, steps_per_epoch: int, epochs: int, start: int, total: int) -> float:
    progress = (step - start) / max(1, total - start)
    return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _step_decay(step: int, steps_per_epoch: int, epochs: int, start: int, total: int) -> float:
    # A tenth of the rate after each third of the epochs.
    return 0.1 ** ((step // steps_per_epoch) // max(1, epochs // 3))


# The factor on the learning rate after warmup, per optimizer step.
SCHEDULES: dict[str, Callable[[int, int, int, int, int], float]] = {
    "none": _constant,
    "cosine": _cosine,
    "step": _step_decay,
}


def parameter_groups(config: TrainConfig, model: Classifier, phase: Phase) -> list[dict[str, Any]]:
    """Weight decay on weights only (not on biases and norm scales); in a gradual network phase
    the backbone learns at ``lr * backbone_lr_scale`` and the head at ``lr``."""
    modules = [("head", model.head)] if phase.head_only else [("backbone", model.backbone), ("head", model.head)]
    groups: list[dict[str, Any]] = []
    for name, module in modules:
        scale = config.backbone_lr_scale if (name == "backbone" and config.mode == "gradual") else 1.0
        decay = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
        groups += [
            {"params": decay, "weight_decay": config.weight_decay, "lr": phase.lr * scale},
            {"params": no_decay, "weight_decay": 0.0, "lr": phase.lr * scale},
        ]
    return [g for g in groups if g["params"]]


def make_optimizer(config: TrainConfig, model: Classifier, phase: Phase) -> torch.optim.Optimizer:
    assert config.optimizer is not None, "make_optimizer needs a resolved() config"
    groups = parameter_groups(config, model, phase)
    devices = {p.device.type for group in groups for p in group["params"]}
    fused = True if devices <= set(FUSED_DEVICES) else None
    return OPTIMIZERS[config.optimizer](groups, phase.lr, config, fused=fused)


def make_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int, epochs: int):
    """Per-step learning-rate factor: linear warmup, then the schedule's decay."""
    assert config.warmup is not None and config.scheduler is not None, "make_scheduler needs a resolved() config"
    total = max(1, steps_per_epoch * epochs)
    warmup = min(round(config.warmup * steps_per_epoch), total - 1)
    decay = SCHEDULES[config.scheduler]

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return decay(step, steps_per_epoch, epochs, warmup, total)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
