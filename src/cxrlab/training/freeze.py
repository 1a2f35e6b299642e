"""Freeze depth: the stem and the first K stages of the backbone frozen, the rest and the head
trained (``--freeze-blocks K`` in finetune mode).

A frozen stage runs in eval mode whatever mode the network is put in (its BatchNorm
statistics never move) and its parameters take no gradients. Without augmentation the frozen
bottom is a fixed function of the image, so its output is computed once per split and kept
on disk, keyed like the frozen features (model, weights, decoded images, image size, splits)
and by K; each epoch then runs only the top of the network over it, so an epoch costs less
the more is frozen. The cache is a memory-mapped ``.npy`` per split: early stages' outputs
are large, and reading them in batches keeps memory bounded. With augmentation, with
``feature_cache`` off, under DistributedDataParallel, or for a ``timm:`` model whose stages
are not promised to run in sequence, the bottom runs every step instead, frozen just the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import atomic_path, file_lock, read_json, write_json
from cxrlab.core.paths import cache_root
from cxrlab.core.progress import progress_bar
from cxrlab.data.batches import batch_indices, image_batches
from cxrlab.data.cache import pixels_checksum
from cxrlab.data.transforms import to_float
from cxrlab.models.initialise import init_kind
from cxrlab.models.registry import backbone_stages
from cxrlab.models.stages import Stages
from cxrlab.training.context import Context
from cxrlab.training.distributed import shard
from cxrlab.training.epochs import summarise
from cxrlab.training.features import feature_key
from cxrlab.training.phases import Diverged, Phase
from cxrlab.training.predict import autocast_for, default_eval_batch_size
from cxrlab.training.runtime import use_channels_last

SPLITS = ("train", "val", "test")


@dataclass
class FrozenBottom:
    k: int
    stages: Stages
    activations: dict[str, np.ndarray] = field(default_factory=dict)  # split -> (N, C, H, W), when cached

    @property
    def cached(self) -> bool:
        return bool(self.activations)

    def keep_frozen_in_eval(self) -> None:
        for module in self.stages.bottom(self.k):
            module.eval()


def freeze_bottom(ctx: Context, phase: Phase, resuming: bool = False) -> FrozenBottom | None:
    """Freeze the stem and the first ``freeze_blocks`` stages of a network phase; with the
    cache, compute (or find) their output for every split. None when nothing is frozen."""
    config = ctx.config
    if config.freeze_blocks is None or phase.head_only:
        return None
    stages = backbone_stages(ctx.model, config.model)
    bottom = FrozenBottom(config.freeze_blocks, stages)
    for module in stages.bottom(bottom.k):
        module.requires_grad_(False)
        for part in module.modules():
            part.register_forward_pre_hook(_stay_in_eval)
    cache = config.augment == "none" and config.feature_cache and stages.sequential and not ctx.ranks.enabled
    if cache:
        for split in SPLITS:
            bottom.activations[split], seconds, cpu_seconds = cached_activations(ctx, bottom, split)
            if not resuming:  # a resumed run's checkpoint already counts them
                ctx.feature_seconds += seconds
                ctx.feature_cpu_seconds += cpu_seconds
    return bottom


def _stay_in_eval(module: torch.nn.Module, args) -> None:
    # A frozen module is a fixed function: model.train() must not let BatchNorm statistics
    # or dropout move it. Returns None, so the inputs pass unchanged.
    if module.training:
        module.training = False


def train_top_epoch(
    ctx: Context, bottom: FrozenBottom, optimizer, scheduler, generator: torch.Generator, epoch: int
) -> tuple[float, float]:
    """One pass of the top of the network over the cached output of the frozen bottom.

    The batches are those ``train_network_epoch`` draws (the same permutation from the same
    generator, rows in index order within a batch), so a cached and an uncached run of one
    seed train the top on the same batches."""
    config, data, model = ctx.config, ctx.data, ctx.model
    model.train()
    bottom.keep_frozen_in_eval()
    top = bottom.stages.top(bottom.k)
    train = data.indices("train")
    order = train[torch.randperm(len(train), generator=generator).numpy()]
    batches = batch_indices(shard(order, ctx.ranks), config.batch_size, shuffle=False, drop_last=True)
    channels_last = use_channels_last(config.channels_last)
    total_loss, correct, seen = 0.0, 0, 0
    with progress_bar(f"epoch {epoch}", len(batches), enabled=ctx.show_progress) as advance:
        for step, batch in enumerate(batches):
            rows = np.sort(batch)
            x = _rows(bottom.activations["train"], np.searchsorted(train, rows), ctx.device, channels_last)
            targets = torch.from_numpy(data.labels[rows]).to(ctx.device)
            with autocast_for(ctx.device):
                logits = model.head(top(x))
                loss = F.cross_entropy(
                    logits.float(), targets, weight=ctx.class_weights, label_smoothing=config.label_smoothing
                )
            if not torch.isfinite(loss):
                raise Diverged(epoch, step + 1, float(loss.detach()))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(targets)
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(targets)
            advance(1)
    return total_loss / max(seen, 1), correct / max(seen, 1)


@torch.no_grad()
def evaluate_top(ctx: Context, bottom: FrozenBottom, split: str = "val") -> tuple[float, float]:
    """Loss and accuracy of the network on ``split`` from the cached bottom output."""
    model = ctx.model.eval()
    top = bottom.stages.top(bottom.k)
    activations = bottom.activations[split]
    size = ctx.config.eval_batch_size or default_eval_batch_size(ctx.device)
    channels_last = use_channels_last(ctx.config.channels_last)
    logits = []
    for start in range(0, len(activations), size):
        x = _rows(activations, np.arange(start, min(start + size, len(activations))), ctx.device, channels_last)
        with autocast_for(ctx.device):
            logits.append(model.head(top(x)).float().cpu())
    labels = torch.from_numpy(ctx.data.labels[ctx.data.indices(split)])
    return summarise(ctx, torch.cat(logits), labels, split)


def _rows(array: np.ndarray, positions: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(array[positions])).to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


# --- the cache of the frozen bottom's output ---------------------------------------------------


def activation_key(ctx: Context, k: int, split: str) -> str:
    """What the cached output depends on: the model and its starting weights (the random
    draw's seed when there are none), the decoded images, their size, the splits, K and the
    memory format the bottom ran in."""
    config, data = ctx.config, ctx.data
    weights_part = ctx.weights_id if ctx.weights_id != "none" else f"random-seed-{config.seed}"
    return feature_key(
        "activations-v1",
        config.model,
        weights_part,
        data.fingerprint,
        data.image_size,
        data.split_fingerprint,
        split,
        k,
        use_channels_last(config.channels_last),
    )


def cached_activations(ctx: Context, bottom: FrozenBottom, split: str) -> tuple[np.ndarray, float, float]:
    """The bottom's output on ``split`` (memory-mapped) and the wall and CPU seconds computing
    it took when it was computed: a run's training time does not depend on what the cache held."""
    key = activation_key(ctx, bottom.k, split)
    folder = cache_root(ctx.config.cache_dir) / "activations"
    array_path, manifest_path = folder / f"{key}.npy", folder / f"{key}.json"
    found = _load(array_path, manifest_path)
    if found is None:
        with file_lock(array_path):
            found = _load(array_path, manifest_path)
            if found is None:
                started, started_cpu = time.perf_counter(), time.process_time()
                with atomic_path(array_path) as tmp:
                    array = _compute(ctx, bottom, split, tmp)
                    checksum = pixels_checksum(np.asarray(array).view(np.uint8))
                    array.flush()
                    shape = list(array.shape)
                    del array
                manifest = {
                    "shape": shape,
                    "checksum": checksum,
                    "seconds": round(time.perf_counter() - started, 3),
                    "cpu_seconds": round(time.process_time() - started_cpu, 3),
                }
                write_json(manifest_path, manifest)
                found = _load(array_path, manifest_path)
    if found is None:
        raise RuntimeError(f"the activation cache {array_path} could not be read back after writing it")
    return found


def _load(array_path: Path, manifest_path: Path) -> tuple[np.ndarray, float, float] | None:
    if not array_path.exists() or not manifest_path.exists():
        return None
    try:
        manifest = read_json(manifest_path)
        array = np.load(array_path, mmap_mode="r", allow_pickle=False)
        shape, checksum = manifest["shape"], manifest["checksum"]
        seconds, cpu_seconds = float(manifest["seconds"]), float(manifest["cpu_seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # unreadable or truncated: recomputed, never trusted
    if array.dtype != np.float32 or list(array.shape) != shape:
        return None
    if pixels_checksum(np.asarray(array).view(np.uint8)) != checksum:
        return None
    return array, seconds, cpu_seconds


@torch.inference_mode()
def _compute(ctx: Context, bottom: FrozenBottom, split: str, path: Path) -> np.memmap:
    """Run the stem and the first K stages (eval mode) over ``split`` into a ``.npy`` at ``path``,
    the images prepared as a training step prepares them."""
    config, data, model = ctx.config, ctx.data, ctx.model
    model.eval()
    indices = data.indices(split)
    channels_last = use_channels_last(config.channels_last)
    size = config.eval_batch_size or default_eval_batch_size(ctx.device)
    out = None
    with progress_bar(f"Frozen stages {split}", len(indices), enabled=ctx.show_progress) as advance:
        for pixels, _, rows in image_batches(data.images, None, batch_indices(indices, size, False), ctx.device):
            x = to_float(pixels)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            x = model.normalize(x)
            with autocast_for(ctx.device):
                for module in bottom.stages.bottom(bottom.k):
                    x = module(x)
            values = x.float().cpu().numpy()
            if out is None:
                out = np.lib.format.open_memmap(
                    path, mode="w+", dtype=np.float32, shape=(len(indices), *values.shape[1:])
                )
            out[np.searchsorted(indices, rows)] = values
            advance(len(rows))
    assert out is not None
    return out


def transfer_fields(ctx: Context) -> dict:
    """The ``RunMetrics`` fields that say what transferred: how the backbone started, how many
    stages its depth settings count, and how many parameters trained."""
    config = ctx.config
    assert config.weights is not None  # resolved() chooses the weights
    try:
        stages = backbone_stages(ctx.model, config.model).count
    except CxrlabError:  # a timm model without feature_info has no stages to count
        stages = None
    return {
        "init": init_kind(config.weights, config.transfer_blocks),
        "stages": stages,
        "trainable_params": sum(p.numel() for p in ctx.model.parameters() if p.requires_grad),
    }
