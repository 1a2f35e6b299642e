"""The fit loop for finetune, frozen, scratch and gradual runs.

Read it top to bottom: ``fit`` loads the data and the model, plans the phases of the mode,
runs the epochs of each phase (train, validate, keep the best checkpoint, write a resumable
one), then scores the selected checkpoint once on the test split and writes the run.

Phases: a ``head`` phase trains only the new head on cached features of the frozen backbone
(``frozen`` mode, and the first phase of ``gradual``); a ``network`` phase trains through
the images (``finetune``, ``scratch``, and the second phase of ``gradual`` with a lower
learning rate for the backbone).
"""

from __future__ import annotations

import math
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrlab.data.batches import batch_indices, image_batches
from cxrlab.data.dataset import Dataset, load_dataset
from cxrlab.data.transforms import AUGMENT_LEVELS, augment_batch, to_float
from cxrlab.errors import CxrlabError
from cxrlab.evaluate.metrics import classification_report, equal_error_threshold, youden_threshold
from cxrlab.io import read_json, read_yaml
from cxrlab.models.registry import Classifier, build_model
from cxrlab.models.weights import load_weights
from cxrlab.progress import console, progress_bar
from cxrlab.train.config import TrainConfig
from cxrlab.train.distributed import (
    SINGLE,
    Ranks,
    init_ranks,
    same_text_everywhere,
    shard,
    shutdown,
    sync_buffers,
    weights_agree,
)
from cxrlab.train.features import cached_features, feature_key, recorded_seconds
from cxrlab.train.predict import autocast_for, predict_logits, softmax
from cxrlab.train.rundir import (
    DIVERGED,
    FAILED,
    FINISHED,
    RUNNING,
    RunWriter,
    load_tensors,
    new_run_id,
    safe_run_id,
    save_tensors,
)


class Diverged(Exception):
    def __init__(self, epoch: int, step: int, loss: float):
        self.epoch, self.step, self.loss = epoch, step, loss
        super().__init__(f"loss became {loss} at epoch {epoch}, step {step}")


@dataclass
class Phase:
    name: str  # "head" or "network"
    epochs: int
    lr: float
    on_features: bool  # head phases train on cached features unless feature_cache is off


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


@dataclass
class Context:
    """What every epoch needs: the data, the model, the device and the run's settings."""

    config: TrainConfig
    data: Dataset
    model: Classifier
    device: torch.device
    writer: RunWriter
    class_weights: torch.Tensor | None
    weights_id: str
    show_progress: bool
    history: list[dict] = field(default_factory=list)
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    feature_seconds: float = 0.0
    tensorboard: object | None = None  # a cxrlab.train.tensorboard.TensorBoardLogger when asked for
    ranks: Ranks = SINGLE


def fit(
    config: TrainConfig,
    *,
    resume: str | os.PathLike | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Train one run and return its run directory."""
    log = log or (lambda line: console.print(line, highlight=False, soft_wrap=True))
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.yaml").exists():
            raise CxrlabError(f"--resume {resume}: not a run directory (no config.yaml)")
        status = read_json(run_dir / "status.json").get("status") if (run_dir / "status.json").exists() else None
        if status in (FINISHED, DIVERGED):
            raise CxrlabError(f"--resume {resume}: the run already {status}; start a new run instead")
        recorded = read_yaml(run_dir / "config.yaml")
        config = TrainConfig(**{k: v for k, v in recorded.items() if k in TrainConfig.model_fields})
    config = config.resolved()
    device = resolve_device(config.device)
    ranks = SINGLE
    if config.distributed:
        ranks = init_ranks(device)
        if device.type == "cuda":
            device = torch.device("cuda", ranks.local_rank)
        if not ranks.is_main:
            log = lambda line: None  # noqa: E731 - one voice per run
    deterministic = config.deterministic if config.deterministic is not None else device.type == "cpu"
    seed_everything(config.seed, deterministic)

    data = load_dataset(
        config.data,
        config.image_size,
        split_seed=config.split_seed,
        val_fraction=config.val_fraction,
        test_fraction=config.test_fraction,
        labels=config.labels,
        on_bad_image=config.on_bad_image,
        cache_dir=config.cache_dir,
        show_progress=show_progress,
    )
    _check_splits(data)
    if resume is not None and recorded.get("data_info", {}).get("split_fingerprint") not in (
        None,
        data.split_fingerprint,
    ):
        # Resuming on other images would mix two data sets in one run's weights and records.
        raise CxrlabError(
            f"--resume {resume}: the data at {config.data} changed since the run started "
            "(files, their sizes or times, or the splits): start a new run"
        )
    model = build_model(config.model, num_classes=len(data.classes))
    weights_id = load_weights(model, config.model, config.weights)
    model.to(device)
    if _channels_last(config, device):
        model.to(memory_format=torch.channels_last)

    if resume is None:
        run_id = safe_run_id(config.name) if config.name else new_run_id(config.model, config.mode)
        run_dir = Path(config.out) / same_text_everywhere(run_id, ranks)
        if ranks.is_main and (run_dir / "status.json").exists():
            raise CxrlabError(f"run directory {run_dir} exists: choose another --name or --resume it")
    writer = RunWriter(run_dir, enabled=ranks.is_main)
    writer.status(RUNNING)
    record = _config_record(config, data, weights_id, device, deterministic)
    writer.config(record)
    writer.split(data.paths, data.splits, data.labels, data.patients, data.classes)

    ctx = Context(
        config=config,
        data=data,
        model=model,
        device=device,
        writer=writer,
        class_weights=_class_weights(config, data, device),
        weights_id=weights_id,
        show_progress=show_progress and ranks.is_main,
        ranks=ranks,
    )
    if config.tensorboard and ranks.is_main:
        from cxrlab.train.tensorboard import TensorBoardLogger

        ctx.tensorboard = TensorBoardLogger(run_dir / "tensorboard", record)
        ctx.tensorboard.examples(data)
    selection = Selection(config.select)
    start_phase, start_epoch = 0, 0
    if resume is not None and (run_dir / "last.pt").exists():
        start_phase, start_epoch, selection = _restore(ctx, run_dir)
        log(f"resuming {run_dir} at phase {start_phase + 1}, epoch {start_epoch + 1}")

    try:
        for index, phase in enumerate(plan_phases(config)):
            if index < start_phase:
                continue
            run_phase(ctx, index, phase, selection, first_epoch=start_epoch if index == start_phase else 0, log=log)
    except Diverged as exc:
        writer.status(DIVERGED, epoch=exc.epoch, step=exc.step, loss=str(exc.loss), best_epoch=selection.epoch or None)
        kept = (
            f"kept the checkpoint of epoch {selection.epoch}"
            if selection.epoch
            else "no epoch finished, no checkpoint kept"
        )
        log(
            f"run diverged: loss became {exc.loss} at epoch {exc.epoch}, step {exc.step}; {kept} in {run_dir}; "
            f"try a lower --lr (now {config.lr:g})"
        )
        return run_dir
    except BaseException:
        writer.status(FAILED)
        raise
    # Fitting time, the study's "Training Time": every epoch plus computing the frozen features
    # (as recorded when they were computed); summed from the records so that a resumed run
    # counts the epochs done before the kill.
    train_seconds = sum(float(row["seconds"]) for row in ctx.history) + ctx.feature_seconds

    if selection.state is None:
        raise CxrlabError("no epoch was trained: use --epochs 1 or more")
    model.load_state_dict(selection.state)
    metrics = score_run(ctx, selection, train_seconds)
    if ranks.enabled:
        metrics["distributed"] = {
            "world_size": ranks.world,
            "backend": torch.distributed.get_backend(),
            "ranks_identical": weights_agree(model, ranks),
        }
        shutdown(ranks)
    if ctx.tensorboard is not None:
        ctx.tensorboard.finish(metrics)
    writer.metrics(metrics)
    writer.status(FINISHED)
    (run_dir / "last.pt").unlink(missing_ok=True)
    log(
        f"[bold]{run_dir.name}[/bold]: test accuracy {metrics['test_accuracy']:.4f}, test loss "
        f"{metrics['test_loss']:.4f}, AUC {metrics['roc_auc']:.4f}, best epoch {metrics['best_epoch']}, "
        f"trained in {train_seconds:.1f} s"
    )
    return run_dir


def plan_phases(config: TrainConfig) -> list[Phase]:
    if config.mode == "frozen":
        return [Phase("head", config.epochs, config.lr, on_features=config.feature_cache)]
    if config.mode == "gradual":
        phases = [Phase("head", config.head_epochs, config.head_lr, on_features=config.feature_cache)]
        return [p for p in phases if p.epochs > 0] + [Phase("network", config.epochs, config.lr, on_features=False)]
    return [Phase("network", config.epochs, config.lr, on_features=False)]


def run_phase(
    ctx: Context, index: int, phase: Phase, selection: Selection, first_epoch: int, log: Callable[[str], None]
) -> None:
    config, model = ctx.config, ctx.model
    head_only = phase.name == "head"
    if head_only and phase.on_features:
        _prepare_features(ctx)
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(not head_only)
    optimizer = make_optimizer(config, model, phase, head_only)
    steps_per_epoch = _steps_per_epoch(ctx, phase)
    scheduler = make_scheduler(config, optimizer, steps_per_epoch, phase.epochs)
    if first_epoch:
        state = load_tensors(ctx.writer.path / "last.pt")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    compiled = torch.compile(model) if config.compile and not head_only else model
    if ctx.ranks.enabled and not head_only:
        from torch.nn.parallel import DistributedDataParallel

        compiled = DistributedDataParallel(
            compiled, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
    epoch_offset = sum(p.epochs for p in plan_phases(config)[:index])

    for epoch in range(first_epoch, phase.epochs):
        number = epoch_offset + epoch + 1
        generator = torch.Generator().manual_seed(config.seed * 100_003 + number)
        tick = time.perf_counter()
        if head_only and phase.on_features:
            train_loss, train_acc = train_head_epoch(ctx, optimizer, scheduler, generator, number)
            val_loss, val_acc = evaluate_head(ctx)
        else:
            train_loss, train_acc = train_network_epoch(
                ctx, compiled, optimizer, scheduler, generator, number, head_only=head_only
            )
            sync_buffers(model, ctx.ranks)
            val_loss, val_acc = evaluate_network(ctx, model)
        if not math.isfinite(val_loss):
            # Finite training losses can still leave weights or BatchNorm statistics at inf.
            raise Diverged(number, steps_per_epoch, val_loss)
        seconds = time.perf_counter() - tick
        row = dict(
            epoch=number,
            phase=phase.name,
            train_loss=round(train_loss, 6),
            train_acc=round(train_acc, 6),
            val_loss=round(val_loss, 6),
            val_acc=round(val_acc, 6),
            lr=f"{optimizer.param_groups[-1]['lr']:.3g}",
            seconds=round(seconds, 3),
        )
        ctx.history.append(row)
        improved = selection.offer(number, val_loss, val_acc, model)
        if improved:
            ctx.writer.model(selection.state, _model_meta(ctx, number))
        ctx.writer.history(ctx.history)
        if ctx.tensorboard is not None:
            ctx.tensorboard.epoch(row)
        _checkpoint(ctx, index, epoch + 1, optimizer, scheduler, selection)
        log(
            f"epoch {number:3d} {phase.name:7s} train loss {train_loss:.4f} acc {train_acc:.4f} | "
            f"val loss {val_loss:.4f} acc {val_acc:.4f}{' *' if improved else '  '} | {seconds:6.1f} s"
        )


def train_network_epoch(
    ctx: Context, model, optimizer, scheduler, generator: torch.Generator, epoch: int, head_only: bool = False
) -> tuple[float, float]:
    """One pass over the training images; the backbone stays in eval mode when it is frozen."""
    config, data = ctx.config, ctx.data
    model.train()
    if head_only:
        ctx.model.backbone.eval()  # frozen means frozen: BatchNorm statistics must not move
    # Every rank draws the same permutation from the same generator, then keeps its shard.
    order = data.indices("train")[torch.randperm(data.count("train"), generator=generator).numpy()]
    batches = batch_indices(shard(order, ctx.ranks), config.batch_size, shuffle=False, drop_last=True)
    augment = config.augment != "none"
    total_loss, correct, seen = 0.0, 0, 0
    with progress_bar(
        f"epoch {epoch}",
        len(batches),
        enabled=ctx.show_progress,
        fields="loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f}",
        loss=0.0,
        acc=0.0,
    ) as advance:
        for step, (pixels, targets, _) in enumerate(image_batches(data.images, data.labels, batches, ctx.device)):
            images = to_float(pixels)
            if augment:
                images = augment_batch(images, generator, **AUGMENT_LEVELS[config.augment])
            if _channels_last(config, ctx.device):
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast_for(ctx.device):
                logits = model(images)
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
            advance(1, loss=total_loss / seen, acc=correct / seen)
    return total_loss / max(seen, 1), correct / max(seen, 1)


def train_head_epoch(ctx: Context, optimizer, scheduler, generator: torch.Generator, epoch: int) -> tuple[float, float]:
    """One pass of the head over cached train features (one random view per image)."""
    config, head = ctx.config, ctx.model.head
    features, labels = ctx.features["train"], ctx.features["train_labels"]
    views, n = features.shape[0], features.shape[1]
    head.train()
    batches = batch_indices(np.arange(n), config.batch_size, shuffle=True, generator=generator, drop_last=True)
    view_of = torch.randint(views, (n,), generator=generator) if views > 1 else torch.zeros(n, dtype=torch.long)
    total_loss, correct, seen = 0.0, 0, 0
    for step, batch in enumerate(batches):
        rows = torch.from_numpy(batch)
        x = features[view_of[rows], rows].to(ctx.device)
        y = labels[rows].to(ctx.device)
        logits = head(x)
        loss = F.cross_entropy(logits, y, weight=ctx.class_weights, label_smoothing=config.label_smoothing)
        if not torch.isfinite(loss):
            raise Diverged(epoch, step + 1, float(loss.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += loss.item() * len(y)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(y)
    return total_loss / max(seen, 1), correct / max(seen, 1)


@torch.no_grad()
def evaluate_head(ctx: Context, split: str = "val") -> tuple[float, float]:
    logits = ctx.model.head.eval()(ctx.features[split][0].to(ctx.device)).float().cpu()
    labels = ctx.features[f"{split}_labels"]
    return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).float().mean())


def evaluate_network(ctx: Context, model: Classifier, split: str = "val") -> tuple[float, float]:
    indices = ctx.data.indices(split)
    logits = torch.from_numpy(
        predict_logits(model, ctx.data.images, indices, ctx.device, batch_size=ctx.config.eval_batch_size)
    )
    labels = torch.from_numpy(ctx.data.labels[indices])
    return float(F.cross_entropy(logits, labels)), float((logits.argmax(1) == labels).float().mean())


def score_run(ctx: Context, selection: Selection, train_seconds: float) -> dict:
    """Score the selected checkpoint: threshold chosen on val, then the test split, once."""
    config, data, model = ctx.config, ctx.data, ctx.model
    classes = data.classes
    positive = positive_index(classes)
    probs = {}
    for split in ("val", "test"):
        if config.tta == 0 and "train" in ctx.features and split in ctx.features and config.mode == "frozen":
            with torch.no_grad():
                logits = model.head.eval()(ctx.features[split][0].to(ctx.device)).float().cpu().numpy()
        else:
            logits = predict_logits(
                model,
                data.images,
                data.indices(split),
                ctx.device,
                batch_size=config.eval_batch_size,
                tta=config.tta,
                seed=config.seed,
            )
        probs[split] = softmax(logits.astype(np.float64))
    val_labels, test_labels = data.labels[data.indices("val")], data.labels[data.indices("test")]
    threshold = choose_threshold(config.threshold, val_labels, probs["val"], positive) if len(classes) == 2 else None
    test = classification_report(test_labels, probs["test"], classes, threshold, positive)
    val = classification_report(val_labels, probs["val"], classes, threshold, positive)
    at_half = classification_report(test_labels, probs["test"], classes, 0.5, positive) if len(classes) == 2 else None
    best_row = next(r for r in ctx.history if r["epoch"] == selection.epoch)
    metrics = {
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        **{
            k: test[k]
            for k in (
                "balanced_accuracy",
                "sensitivity",
                "specificity",
                "precision",
                "recall",
                "f1",
                "roc_auc",
                "ece",
                "confusion_matrix",
                "per_class",
                "threshold",
                "positive_class",
            )
            if k in test
        },
        "threshold_rule": config.threshold if len(classes) == 2 else "argmax",
        "test_at_threshold_0.5": _short(at_half) if at_half else None,
        "val_loss": val["loss"],
        "val_accuracy": val["accuracy"],
        "val_roc_auc": val.get("roc_auc"),
        "train_accuracy_at_best": best_row["train_acc"],
        "train_seconds": round(train_seconds, 3),
        "best_epoch": selection.epoch,
        "epochs_run": len(ctx.history),
        "n_train": data.count("train"),
        "n_val": data.count("val"),
        "n_test": data.count("test"),
        "classes": classes,
        "mode": config.mode,
        "model": config.model,
        "weights": config.weights,
        "tta": config.tta,
    }
    ctx.writer.predictions(
        [data.paths[i] for s in ("val", "test") for i in data.indices(s)],
        [s for s in ("val", "test") for _ in data.indices(s)],
        np.concatenate([val_labels, test_labels]),
        np.concatenate([probs["val"], probs["test"]]),
        classes,
    )
    return metrics


def choose_threshold(rule: str, labels: np.ndarray, probs: np.ndarray, positive: int) -> float:
    """The decision threshold on p(positive), chosen on validation data only."""
    if rule == "0.5" or len(np.unique(labels)) < 2:
        return 0.5
    scores = probs[:, positive]
    return (
        youden_threshold(labels, scores, positive)
        if rule == "val-youden"
        else equal_error_threshold(labels, scores, positive)
    )


def positive_index(classes: list[str]) -> int:
    """The disease class: PNEUMONIA when present, else the second class."""
    upper = [c.upper() for c in classes]
    return upper.index("PNEUMONIA") if "PNEUMONIA" in upper else min(1, len(classes) - 1)


# --- optimisation -------------------------------------------------------------------------


def make_optimizer(config: TrainConfig, model: Classifier, phase: Phase, head_only: bool) -> torch.optim.Optimizer:
    """Weight decay on weights only (not on biases and norm scales); in a gradual network phase
    the backbone learns at ``lr * backbone_lr_scale`` and the head at ``lr``."""
    modules = [("head", model.head)] if head_only else [("backbone", model.backbone), ("head", model.head)]
    groups = []
    for name, module in modules:
        scale = config.backbone_lr_scale if (name == "backbone" and config.mode == "gradual") else 1.0
        decay = [p for p in module.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim <= 1]
        groups += [
            {"params": decay, "weight_decay": config.weight_decay, "lr": phase.lr * scale},
            {"params": no_decay, "weight_decay": 0.0, "lr": phase.lr * scale},
        ]
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=phase.lr, momentum=config.momentum, nesterov=True)
    if config.optimizer == "adam":
        # Adam's weight_decay is L2 in the gradient, the classic formulation the study used.
        return torch.optim.Adam(groups, lr=phase.lr)
    return torch.optim.AdamW(groups, lr=phase.lr)


def make_scheduler(config: TrainConfig, optimizer, steps_per_epoch: int, epochs: int):
    """Per-step learning-rate factor: linear warmup, then constant, cosine or step decay."""
    total = max(1, steps_per_epoch * epochs)
    warmup = min(round(config.warmup * steps_per_epoch), total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if config.scheduler == "cosine":
            progress = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if config.scheduler == "step":
            return 0.1 ** ((step // steps_per_epoch) // max(1, epochs // 3))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- pieces -------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CxrlabError("--device cuda asked for, but no CUDA device is available: use --device cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = not deterministic


def _channels_last(config: TrainConfig, device: torch.device) -> bool:
    # Measured on a 2-core CPU (bench/fast_paths.py): 1.5x faster training and 1.9x faster
    # inference for EfficientNet-Lite0; on GPUs the tensor cores want it too.
    return config.channels_last if config.channels_last is not None else True


def _check_splits(data: Dataset) -> None:
    for split in ("train", "val", "test"):
        if data.count(split) == 0:
            raise CxrlabError(
                f"the {split} split of {data.location} is empty: add images or lower the held-out fractions"
            )
    if len(np.unique(data.labels[data.indices("train")])) < 2:
        raise CxrlabError(f"the train split of {data.location} holds one class: a classifier needs two or more")


def _class_weights(config: TrainConfig, data: Dataset, device: torch.device) -> torch.Tensor | None:
    if config.class_weights == "none":
        return None
    counts = np.bincount(data.labels[data.indices("train")], minlength=len(data.classes)).astype(np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32, device=device)


def _steps_per_epoch(ctx: Context, phase: Phase) -> int:
    """Optimizer steps in one epoch of ``phase``, as the schedule must count them: full batches
    only (drop_last), over this rank's shard when the images are sharded across ranks."""
    n = ctx.data.count("train")
    if not phase.on_features:
        n = len(shard(np.arange(n), ctx.ranks))
    return max(1, n // ctx.config.batch_size)


def _prepare_features(ctx: Context) -> None:
    """Cached pooled features of train (``views`` of them), val and test."""
    if "train" in ctx.features:
        return
    config, data = ctx.config, ctx.data
    augment = config.augment != "none"
    views = config.feature_views if augment else 1
    level = {split: config.augment if split == "train" else "none" for split in ("train", "val", "test")}
    weights_part = ctx.weights_id if ctx.weights_id != "none" else f"random-seed-{config.seed}"
    for split in ("train", "val", "test"):
        indices = data.indices(split)
        split_views = views if split == "train" else 1
        # The seed only draws the augmented views: plain features of pretrained weights are
        # the same for every seed, so the repeats of a frozen run share them.
        view_seed = config.seed if augment and split == "train" else 0
        key = feature_key(
            "features-v1",
            config.model,
            weights_part,
            data.fingerprint,
            data.image_size,
            data.split_fingerprint,
            split,
            split_views,
            level[split],
            view_seed,
        )
        ctx.features[split] = cached_features(
            ctx.model,
            data.images,
            indices,
            key=key,
            device=ctx.device,
            batch_size=config.eval_batch_size,
            views=split_views,
            augment=level[split],
            seed=config.seed,
            cache_dir=config.cache_dir,
            show_progress=ctx.show_progress,
            label=split,
        )
        ctx.features[f"{split}_labels"] = torch.from_numpy(data.labels[indices])
        # What computing these features cost, even when an earlier run computed them: a
        # run's training time must not depend on what happens to be in the cache.
        ctx.feature_seconds += recorded_seconds(key, config.cache_dir) or 0.0


def _checkpoint(ctx: Context, phase_index: int, epochs_done: int, optimizer, scheduler, selection: Selection) -> None:
    if not ctx.writer.enabled:
        return
    save_tensors(
        ctx.writer.path / "last.pt",
        {
            "phase": phase_index,
            "epochs_done": epochs_done,
            "model": ctx.model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "best_epoch": selection.epoch,
            "best_score": selection.score,
            "feature_seconds": ctx.feature_seconds,
        },
    )


def _restore(ctx: Context, run_dir: Path) -> tuple[int, int, Selection]:
    state = load_tensors(run_dir / "last.pt")
    ctx.model.load_state_dict(state["model"])
    torch.set_rng_state(state["rng"])
    from cxrlab.train.rundir import read_csv

    phases = plan_phases(ctx.config)
    phase, done = int(state["phase"]), int(state["epochs_done"])
    epochs_done = sum(p.epochs for p in phases[:phase]) + done
    # A kill between writing history.csv and last.pt leaves a row of the epoch about to be redone.
    ctx.history = [
        {k: (v if k in ("phase", "lr") else float(v) if k != "epoch" else int(v)) for k, v in row.items()}
        for row in read_csv(run_dir / "history.csv")
        if int(row["epoch"]) <= epochs_done
    ]
    ctx.feature_seconds = float(state["feature_seconds"])
    selection = Selection(ctx.config.select, score=float(state["best_score"]), epoch=int(state["best_epoch"]))
    if (run_dir / "model.pt").exists():
        selection.state = load_tensors(run_dir / "model.pt")["state_dict"]
    if done >= phases[phase].epochs and phase + 1 < len(phases):
        phase, done = phase + 1, 0
    return phase, done, selection


def _model_meta(ctx: Context, epoch: int) -> dict:
    return {"model": ctx.config.model, "classes": ctx.data.classes, "image_size": ctx.config.image_size, "epoch": epoch}


def _short(report: dict) -> dict:
    return {
        k: report[k]
        for k in ("accuracy", "balanced_accuracy", "sensitivity", "specificity", "precision", "f1")
        if k in report
    }


def _config_record(
    config: TrainConfig, data: Dataset, weights_id: str, device: torch.device, deterministic: bool
) -> dict:
    import timm
    import torchvision

    from cxrlab import __version__

    record = config.model_dump()
    record["data_info"] = {
        "location": data.location,
        "kind": data.kind,
        "classes": data.classes,
        "fingerprint": data.fingerprint,
        "split_fingerprint": data.split_fingerprint,
        "n": {s: data.count(s) for s in ("train", "val", "test")},
        "split_notes": data.split_notes,
        "skipped_images": data.skipped,
        "ignored_files": len(data.ignored),
    }
    record["weights_id"] = weights_id
    record["environment"] = {
        "cxrlab": __version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "torchvision": str(torchvision.__version__),
        "timm": str(timm.__version__),
        "numpy": str(np.__version__),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "deterministic": deterministic,
        "host": socket.gethostname(),
    }
    return record
