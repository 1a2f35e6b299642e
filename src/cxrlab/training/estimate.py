"""What a run will cost, said before it starts: a few batches timed on this machine, scaled
to the run's epochs and images.

A bare ``cxrlab train`` fine-tunes for 10 epochs at 224 px, which is hours on a CPU; the
user should hear so before the first epoch, not after. The model is built with random
weights (timing needs no download), one batch warms up, and the next batches are timed: a
training step (forward, backward, optimiser step) for the phases that train through the
images, an inference batch for validation and for computing frozen features.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cxrlab.data.dataset import Dataset
from cxrlab.models.registry import build_model
from cxrlab.models.weights import load_weights
from cxrlab.training.config import TrainConfig
from cxrlab.training.phases import Phase, plan_phases
from cxrlab.training.predict import autocast_for, default_eval_batch_size
from cxrlab.training.runtime import resolve_device, use_channels_last

TIMED_BATCHES = 2
# A run of less network work than this many training steps is over before timing it would pay off.
WORTH_TIMING = 30
# An inference batch (forward only) costs about a third of a training step (forward, backward, update).
INFERENCE_STEP_SHARE = 1 / 3


@dataclass
class RunEstimate:
    seconds: float  # the whole run, all phases, validation and the final scoring
    epochs: int
    n_train: int
    step_seconds: float  # one training step of batch_size images (0 when no phase trains the network)
    image_seconds: float  # inference, per image
    device: str

    def sentence(self, config: TrainConfig) -> str:
        step = (
            f"{self.step_seconds:.2f} s a training batch of {config.batch_size}, timed"
            if self.step_seconds
            else f"{1000 * self.image_seconds:.1f} ms an image for the features, timed"
        )
        return (
            f"{config.model} {config.mode}: {self.epochs} epochs at {config.image_size} px over {self.n_train} "
            f"training images on {self.device}, about {duration(self.seconds)} here ({step})"
        )


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_run(config: TrainConfig, data: Dataset) -> RunEstimate | None:
    """The run's time on this machine from timed batches (``config`` is resolved), or None
    for a run too short to be worth timing (it builds no model: the run itself follows at once).
    The weights are loaded before any timing, so that weights that cannot be had fail at once
    rather than after it."""
    phases = plan_phases(config)
    work = [_phase_work(config, phase, data) for phase in phases]
    steps, feature_images, val_images = map(sum, zip((0, 0, 0), *work))
    if steps + INFERENCE_STEP_SHARE * feature_images / config.batch_size < WORTH_TIMING:
        return None
    device = resolve_device(config.device)
    model = build_model(config.model, num_classes=len(data.classes))
    assert config.weights is not None  # resolved() chooses the weights
    load_weights(model, config.model, config.weights)
    model.to(device)
    if use_channels_last(config.channels_last):
        model.to(memory_format=torch.channels_last)
    eval_batch = min(config.eval_batch_size or default_eval_batch_size(device), 32)
    image_seconds = _inference_seconds(model, eval_batch, config.image_size, device) / eval_batch
    n_train, n_test = data.count("train"), data.count("test")
    step_seconds = 0.0
    if steps:
        step_seconds = _train_step_seconds(model, max(2, min(config.batch_size, n_train)), config.image_size, device)
    scoring_images = (1 + config.tta) * n_test  # the final scoring
    return RunEstimate(
        seconds=steps * step_seconds + (feature_images + val_images + scoring_images) * image_seconds,
        epochs=sum(p.epochs for p in phases),
        n_train=n_train,
        step_seconds=step_seconds,
        image_seconds=image_seconds,
        device=device.type,
    )


def _phase_work(config: TrainConfig, phase: Phase, data: Dataset) -> tuple[int, int, int]:
    """A phase's training steps, images through the frozen backbone and validation images. A
    phase on frozen features runs the backbone once over the images (its head epochs cost next
    to nothing); any other phase takes its steps and validates every epoch."""
    n_train = data.count("train")
    if phase.head_only and phase.on_features:
        return 0, config.feature_views * n_train + data.count("val") + data.count("test"), 0
    return phase.epochs * max(1, n_train // config.batch_size), 0, phase.epochs * data.count("val")


def _images(batch: int, size: int, device: torch.device) -> torch.Tensor:
    return torch.rand(batch, 1, size, size, device=device)


def _inference_seconds(model: torch.nn.Module, batch: int, size: int, device: torch.device) -> float:
    model.eval()
    images = _images(batch, size, device)
    with torch.inference_mode(), autocast_for(device):
        model(images)
        tick = time.perf_counter()
        for _ in range(TIMED_BATCHES):
            model(images)
        _sync(device)
    return (time.perf_counter() - tick) / TIMED_BATCHES


def _train_step_seconds(model: torch.nn.Module, batch: int, size: int, device: torch.device) -> float:
    model.train()
    images, targets = _images(batch, size, device), torch.zeros(batch, dtype=torch.long, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    tick = 0.0
    for step in range(TIMED_BATCHES + 1):
        if step == 1:
            _sync(device)
            tick = time.perf_counter()
        with autocast_for(device):
            loss = F.cross_entropy(model(images).float(), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    _sync(device)
    return (time.perf_counter() - tick) / TIMED_BATCHES


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
