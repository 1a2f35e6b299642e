"""One epoch of training or validation, through the images or over cached features."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cxrlab.core.progress import progress_bar
from cxrlab.data.batches import batch_indices, image_batches
from cxrlab.data.transforms import augment_training_batch, to_float
from cxrlab.models.registry import Classifier
from cxrlab.training.batchnorm import freeze_bn_stats
from cxrlab.training.context import Context
from cxrlab.training.convergence import validation_summary
from cxrlab.training.distributed import shard
from cxrlab.training.external import TARGET_VAL
from cxrlab.training.phases import Diverged
from cxrlab.training.predict import autocast_for, predict_logits
from cxrlab.training.runtime import use_channels_last


def train_network_epoch(
    ctx: Context, model, optimizer, scheduler, generator: torch.Generator, epoch: int, head_only: bool = False
) -> tuple[float, float]:
    """One pass over the training images; the backbone stays in eval mode when it is frozen."""
    config, data = ctx.config, ctx.data
    assert config.augment is not None  # resolved() sets the mode's augmentation
    model.train()
    if head_only:
        ctx.model.backbone.eval()  # frozen means frozen: BatchNorm statistics must not move
    elif config.freeze_bn_stats:
        freeze_bn_stats(ctx.model)
    # Every rank draws the same permutation from the same generator, then keeps its shard.
    order = data.indices("train")[torch.randperm(data.count("train"), generator=generator).numpy()]
    batches = batch_indices(shard(order, ctx.ranks), config.batch_size, shuffle=False, drop_last=True)
    channels_last = use_channels_last(config.channels_last)
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
            images = augment_training_batch(to_float(pixels), generator, config.augment, config.intensity)
            if channels_last:
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
            if ctx.average is not None:
                ctx.average.update_parameters(ctx.model)
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
    return summarise(ctx, logits, ctx.features[f"{split}_labels"], split)


def evaluate_network(ctx: Context, model: Classifier, split: str = "val") -> tuple[float, float]:
    indices = ctx.data.indices(split)
    return evaluate_images(ctx, model, ctx.data.images, indices, ctx.data.labels[indices], split)


def evaluate_images(
    ctx: Context,
    model: Classifier,
    images: np.ndarray,
    indices: np.ndarray,
    labels: np.ndarray,
    split: str | None = None,
) -> tuple[float, float]:
    """Loss and accuracy of ``model`` on ``images[indices]`` with ``labels``."""
    logits = torch.from_numpy(predict_logits(model, images, indices, ctx.device, batch_size=ctx.config.eval_batch_size))
    return summarise(ctx, logits, torch.from_numpy(np.asarray(labels, dtype=np.int64)), split)


def summarise(ctx: Context, logits: torch.Tensor, labels: torch.Tensor, split: str | None) -> tuple[float, float]:
    """``(loss, accuracy)``; the validation AUC goes to ``ctx.val_auc`` for the epoch's record."""
    loss, accuracy, auc = validation_summary(logits, labels, ctx.data.classes)
    if split == "val":
        ctx.val_auc = auc
    return loss, accuracy


def evaluate_target(ctx: Context, model: Classifier, on_features: bool = False) -> tuple[float, float] | None:
    """Loss and accuracy on the labelled target sample that chooses (None without one): from
    its cached features in a head phase, else through the images."""
    target = ctx.target
    if target is None:
        return None
    if on_features:
        return evaluate_head(ctx, TARGET_VAL)
    return evaluate_images(ctx, model, target.dataset.images, target.indices, target.labels)


def evaluate_selection_set(ctx: Context, model: Classifier) -> tuple[float, float]:
    """Loss and accuracy on the set that chooses: the labelled target sample, else validation."""
    return evaluate_target(ctx, model) or evaluate_network(ctx, model)
