"""The epochs of one phase: train, validate (on the set that chooses), keep the best weights
in memory, write a resumable checkpoint, log one line per epoch.

``loop.fit`` runs the phases of a mode in order through ``run_phase``; an epoch itself lives
in ``epochs`` (or ``freeze`` when a frozen bottom's activations are cached).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from cxrlab.models.registry import Classifier
from cxrlab.training.checkpoint import on_improvement, restore_optimizer, save_checkpoint, write_best
from cxrlab.training.context import Context
from cxrlab.training.distributed import sync_buffers
from cxrlab.training.early_stop import stalled_epochs
from cxrlab.training.epochs import (
    evaluate_head,
    evaluate_network,
    evaluate_target,
    train_head_epoch,
    train_network_epoch,
)
from cxrlab.training.external import TARGET_VAL, target_features
from cxrlab.training.features import prepare_features
from cxrlab.training.freeze import evaluate_top, freeze_bottom, train_top_epoch
from cxrlab.training.optim import make_optimizer, make_scheduler
from cxrlab.training.phases import Diverged, Phase, Selection, plan_phases
from cxrlab.training.records import EpochRecord
from cxrlab.training.robust import keep_probe, validation_model, weight_average

Log = Callable[[str], None]


def run_phase(ctx: Context, index: int, phase: Phase, selection: Selection, first_epoch: int, log: Log) -> None:
    config, model = ctx.config, ctx.model
    on_features = phase.head_only and phase.on_features
    if on_features:
        _prepare_features(ctx)
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(not phase.head_only)
    bottom = freeze_bottom(ctx, phase, resuming=first_epoch > 0)
    optimizer = make_optimizer(config, model, phase)
    steps_per_epoch = ctx.steps_per_epoch(phase)
    scheduler = make_scheduler(config, optimizer, steps_per_epoch, phase.epochs)
    ctx.average = weight_average(model, config.ema) if config.ema and not phase.head_only else None
    if config.wise and not phase.head_only and first_epoch == 0:
        keep_probe(ctx)  # what the network phase starts from: the head phase's end, WiSE's a = 0
    if first_epoch:
        restore_optimizer(ctx.writer.path, optimizer, scheduler, ctx.average)
    network = _network_for(ctx, phase)
    epoch_offset = sum(p.epochs for p in plan_phases(config)[:index])

    for epoch in range(first_epoch, phase.epochs):
        stalled = stalled_epochs([row.selection_loss for row in ctx.history if row.phase == phase.name])
        if config.patience and stalled >= config.patience:
            # Checked before an epoch, not after, so that a resumed run stops where an unbroken one does.
            log(
                f"early stop: no lower validation loss for {stalled} epoch{'s' if stalled > 1 else ''} of the {phase.name} phase (--patience)"
            )
            break
        number = epoch_offset + epoch + 1
        generator = torch.Generator().manual_seed(config.seed * 100_003 + number)
        tick, tick_cpu = time.perf_counter(), time.process_time()
        validated: Classifier = model
        if bottom is not None and bottom.cached:
            train_loss, train_acc = train_top_epoch(ctx, bottom, optimizer, scheduler, generator, number)
            val_loss, val_acc = evaluate_top(ctx, bottom)
        elif on_features:
            train_loss, train_acc = train_head_epoch(ctx, optimizer, scheduler, generator, number)
            val_loss, val_acc = evaluate_head(ctx)
        else:
            train_loss, train_acc = train_network_epoch(
                ctx, network, optimizer, scheduler, generator, number, head_only=phase.head_only
            )
            sync_buffers(model, ctx.ranks)
            validated = validation_model(ctx)  # the weight average when one is kept
            val_loss, val_acc = evaluate_network(ctx, validated)
        if not math.isfinite(val_loss):
            # Finite training losses can still leave weights or BatchNorm statistics at inf.
            raise Diverged(number, steps_per_epoch, val_loss)
        target = evaluate_target(ctx, validated, on_features)
        row = EpochRecord(
            epoch=number,
            phase=phase.name,
            train_loss=round(train_loss, 6),
            train_acc=round(train_acc, 6),
            val_loss=round(val_loss, 6),
            val_acc=round(val_acc, 6),
            lr=float(f"{optimizer.param_groups[-1]['lr']:.3g}"),
            seconds=round(time.perf_counter() - tick, 3),
            cpu_seconds=round(time.process_time() - tick_cpu, 3),
            target_val_loss=round(target[0], 6) if target else None,
            target_val_acc=round(target[1], 6) if target else None,
            val_auc=None if ctx.val_auc is None else round(ctx.val_auc, 6),
        )
        # With WiSE-FT the head phase is the probe, the a = 0 end of the mixtures, not a candidate.
        candidate = not (config.wise and phase.head_only)
        improved = _record_epoch(ctx, row, selection, target or (val_loss, val_acc), validated, candidate)
        if improved:
            on_improvement(ctx, phase, selection)
        save_checkpoint(ctx, phase, index, epoch + 1, optimizer, scheduler, selection)
        target_text = f" | target loss {target[0]:.4f} acc {target[1]:.4f}" if target else ""
        log(
            f"epoch {number:3d} {phase.name:7s} train loss {train_loss:.4f} acc {train_acc:.4f} | "
            f"val loss {val_loss:.4f} acc {val_acc:.4f}{target_text}{' *' if improved else '  '} | {row.seconds:6.1f} s"
        )
    if phase.head_only:
        write_best(ctx, selection)  # the head phase's best, assembled once


def _prepare_features(ctx: Context) -> None:
    """Cached features of the splits, and of the labelled target sample when it chooses."""
    prepare_features(ctx)
    if ctx.target is not None and TARGET_VAL not in ctx.features:
        features, labels = target_features(ctx.model, ctx.target, ctx.device, ctx.config)
        ctx.features[TARGET_VAL], ctx.features[f"{TARGET_VAL}_labels"] = features, labels


def _network_for(ctx: Context, phase: Phase) -> torch.nn.Module:
    """The module a network phase steps through: compiled and wrapped in DDP when asked for."""
    network: torch.nn.Module = ctx.model
    if ctx.config.compile and not phase.head_only:
        network = torch.compile(network)  # type: ignore[assignment]
    if ctx.ranks.enabled and not phase.head_only:
        from torch.nn.parallel import DistributedDataParallel

        network = DistributedDataParallel(network, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    return network


def _record_epoch(
    ctx: Context,
    row: EpochRecord,
    selection: Selection,
    scores: tuple[float, float],
    model: torch.nn.Module,
    candidate: bool = True,
) -> bool:
    """Append the epoch to the history and keep ``model``'s weights in memory if their ``scores``
    (loss, accuracy on the set that chooses) are the best so far; whether they were."""
    ctx.history.append(row)
    improved = candidate and selection.offer(row.epoch, scores[0], scores[1], model)
    ctx.writer.history(ctx.history)
    if ctx.tensorboard is not None:
        ctx.tensorboard.epoch(row)
    return improved
