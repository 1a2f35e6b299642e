"""The learning-rate range test (Smith 2015; fastai's ``lr_find``): train for a few dozen
steps while the learning rate grows exponentially, record the loss, and suggest a rate
where the loss falls fastest over the longest stretch.

It trains what the mode trains (the head alone in frozen mode, every parameter otherwise),
from the run's weights, with the run's optimiser, batch size and augmentation, on the train
split only: validation and test images are never seen, so the suggestion chooses nothing on
them. The model is thrown away afterwards; nothing is written but the plot the caller asks for.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cxrlab.core.errors import CxrlabError
from cxrlab.data.batches import batch_indices, image_batches
from cxrlab.data.transforms import AUGMENT_LEVELS, augment_batch, to_float
from cxrlab.models.registry import build_model
from cxrlab.models.weights import load_weights
from cxrlab.training.config import TrainConfig
from cxrlab.training.optim import make_optimizer
from cxrlab.training.phases import Phase
from cxrlab.training.predict import autocast_for
from cxrlab.training.run_data import load_run_data
from cxrlab.training.runtime import resolve_device, seed_everything, use_channels_last

logger = logging.getLogger(__name__)

# The loss is smoothed by an exponential moving average with bias correction, as fastai's
# (0.98 over its 100 steps); a shorter test averages over a fifth of its steps, so that the
# smoothed curve does not lag behind the rates it is drawn against.
SMOOTHING = 0.98
DIVERGENCE = 4.0  # stop once the smoothed loss is this many times its minimum


@dataclass
class LRFinding:
    """The learning rates tried, the smoothed loss at each, and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    suggestion: float
    model: str
    mode: str
    stopped: str  # why the test ended: "diverged" or "end of range"
    raw_losses: list[float] = field(default_factory=list)


def lr_schedule(start_lr: float, end_lr: float, steps: int) -> np.ndarray:
    return start_lr * (end_lr / start_lr) ** (np.arange(steps) / max(1, steps - 1))


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's "valley" suggestion: the longest stretch over which the loss keeps falling,
    and a rate two thirds of the way down it."""
    n = len(losses)
    run = [1] * n
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[end] < run[i]:
            end, start = i, i - run[i]
    third = (end - start) / 3
    return float(lrs[min(n - 1, max(0, start + int(third) + int(third / 2)))])


def check_range(start_lr: float, end_lr: float, steps: int) -> None:
    if not (math.isfinite(start_lr) and math.isfinite(end_lr)) or not 0 < start_lr < end_lr:
        raise CxrlabError(f"lr-find needs 0 < --start-lr < --end-lr (got {start_lr:g} and {end_lr:g})")
    if not 5 <= steps <= 10_000:
        raise CxrlabError(f"--steps {steps}: use 5 to 10000 steps")


def find_lr(
    config: TrainConfig, start_lr: float = 1e-7, end_lr: float = 10.0, steps: int = 100, show_progress: bool = True
) -> LRFinding:
    """Run the range test for ``config`` (its data, model, mode and training settings)."""
    check_range(start_lr, end_lr, steps)
    config = config.resolved()
    device = resolve_device(config.device)
    seed_everything(config.seed, config.deterministic if config.deterministic is not None else device.type == "cpu")
    data = load_run_data(config, show_progress)
    train = data.indices("train")
    if len(train) < 2:
        raise CxrlabError(f"the train split of {data.location} has {len(train)} images: lr-find needs two or more")
    model = build_model(config.model, num_classes=len(data.classes))
    assert config.weights is not None  # resolved() chooses the weights
    load_weights(model, config.model, config.weights)
    model.to(device)
    if use_channels_last(config.channels_last):
        model.to(memory_format=torch.channels_last)
    head_only = config.mode == "frozen"
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(not head_only)
    phase = Phase("head" if head_only else "network", 1, start_lr, on_features=False)
    optimizer = make_optimizer(config, model, phase)
    scales = [group["lr"] / start_lr for group in optimizer.param_groups]
    lrs, raw, smoothed = _sweep(config, data, model, optimizer, scales, lr_schedule(start_lr, end_lr, steps), device)
    stopped = "diverged" if len(lrs) < steps else "end of range"
    if len(lrs) < 5:
        raise CxrlabError(
            f"lr-find: the loss blew up within {len(lrs)} steps from --start-lr {start_lr:g}: start lower"
        )
    suggestion = valley(lrs, smoothed)
    logger.info(
        f"lr-find: {len(lrs)} steps from {start_lr:g} to {lrs[-1]:.3g} ({stopped}); suggested lr {suggestion:.2g}"
    )
    return LRFinding(lrs, smoothed, suggestion, config.model, config.mode, stopped, raw)


def _sweep(config, data, model, optimizer, scales, schedule, device) -> tuple[list[float], list[float], list[float]]:
    """Step through batches at each rate of ``schedule``; stop when the loss diverges."""
    generator = torch.Generator().manual_seed(config.seed)
    train = data.indices("train")
    batch_size = min(config.batch_size, len(train))
    model.train()
    if config.mode == "frozen":
        model.backbone.eval()  # frozen means frozen: BatchNorm statistics stay
    lrs: list[float] = []
    raw: list[float] = []
    smoothed: list[float] = []
    average, best = 0.0, math.inf
    beta = min(SMOOTHING, 1 - 5 / len(schedule))
    batches: list[np.ndarray] = []
    for step, lr in enumerate(schedule):
        if not batches:  # another pass over the train split, in a new order
            batches = batch_indices(train, batch_size, shuffle=True, generator=generator, drop_last=True)[::-1]
        pixels, targets, _ = next(image_batches(data.images, data.labels, [batches.pop()], device))
        for group, scale in zip(optimizer.param_groups, scales):
            group["lr"] = float(lr) * scale
        images = to_float(pixels)
        if config.augment != "none":
            images = augment_batch(images, generator, **AUGMENT_LEVELS[config.augment])
        with autocast_for(device):
            loss = F.cross_entropy(model(images).float(), targets, label_smoothing=config.label_smoothing)
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        average = beta * average + (1 - beta) * value
        current = average / (1 - beta ** (step + 1))
        lrs.append(float(lr))
        raw.append(value)
        smoothed.append(current)
        best = min(best, current)
        if step > 0 and current > DIVERGENCE * best:
            break
    return lrs, raw, smoothed
