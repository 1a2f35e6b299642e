"""The epochs of one phase: train, validate (on the set that chooses), keep the best weights
in memory, write a resumable checkpoint, log one line per epoch.

``loop.fit`` runs the phases of a mode in order through ``run_phase``; an epoch itself lives
in ``epochs`` (or ``freeze`` when a frozen bottom's activations are cached).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

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
from cxrlab.training.freeze import FrozenBottom, evaluate_top, freeze_bottom, train_top_epoch
from cxrlab.training.optim import make_optimizer, make_scheduler
from cxrlab.training.phases import Diverged, Phase, Selection, plan_phases
from cxrlab.training.records import EpochRecord
from cxrlab.training.robust import keep_probe, validation_model, weight_average

Log = Callable[[str], None]


class PhaseSetup(NamedTuple):
    """What a phase's epochs step with, made once before its first epoch."""

    bottom: FrozenBottom | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    network: torch.nn.Module


class EpochScores(NamedTuple):
    """An epoch's training and validation loss and accuracy, unrounded: the record rounds them
    to six places and the log line to four, each from the measured value."""

    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float


def run_phase(ctx: Context, index: int, phase: Phase, selection: Selection, first_epoch: int, log: Log) -> None:
    """Run ``phase``'s epochs from ``first_epoch`` (0, or where a resumed run stopped): train,
    validate, record, keep the best weights and write a resumable checkpoint after each."""
    config = ctx.config
    on_features = phase.head_only and phase.on_features
    if on_features:
        _prepare_features(ctx)
    setup = _set_up_phase(ctx, phase, first_epoch)
    epoch_offset = sum(p.epochs for p in plan_phases(config)[:index])

    for epoch in range(first_epoch, phase.epochs):
        if _stops_early(ctx, phase, log):
            break
        number = epoch_offset + epoch + 1
        generator = torch.Generator().manual_seed(config.seed * 100_003 + number)
        tick, tick_cpu = time.perf_counter(), time.process_time()
        scores, validated = _train_and_validate(ctx, phase, setup, generator, number, on_features)
        if not math.isfinite(scores.val_loss):
            # Finite training losses can still leave weights or BatchNorm statistics at inf.
            raise Diverged(number, setup.steps_per_epoch, scores.val_loss)
        target = evaluate_target(ctx, validated, on_features)
        row = _epoch_record(ctx, phase, number, scores, target, setup.optimizer, tick, tick_cpu)
        # With WiSE-FT the head phase is the probe, the a = 0 end of the mixtures, not a candidate.
        candidate = not (config.wise and phase.head_only)
        improved = _record_epoch(ctx, row, selection, target or (scores.val_loss, scores.val_acc), validated, candidate)
        if improved:
            on_improvement(ctx, phase, selection)
        save_checkpoint(ctx, phase, index, epoch + 1, setup.optimizer, setup.scheduler, selection)
        log(_epoch_line(row, scores, target, improved))
    if phase.head_only:
        write_best(ctx, selection)  # the head phase's best, assembled once


def _set_up_phase(ctx: Context, phase: Phase, first_epoch: int) -> PhaseSetup:
    """Unfreeze what the phase trains and make its optimiser, schedule and weight average
    (restored from the checkpoint when the phase resumes), in the order a fresh run makes them."""
    config, model = ctx.config, ctx.model
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
    return PhaseSetup(bottom, optimizer, scheduler, steps_per_epoch, _network_for(ctx, phase))


def _stops_early(ctx: Context, phase: Phase, log: Log) -> bool:
    """Whether the phase's validation loss has not fallen for ``--patience`` epochs (said when so).

    Checked before an epoch, not after, so that a resumed run stops where an unbroken one does."""
    patience = ctx.config.patience
    stalled = stalled_epochs([row.selection_loss for row in ctx.history if row.phase == phase.name])
    if patience and stalled >= patience:
        log(
            f"early stop: no lower validation loss for {stalled} epoch{'s' if stalled > 1 else ''} of the {phase.name} phase (--patience)"
        )
        return True
    return False


def _train_and_validate(
    ctx: Context,
    phase: Phase,
    setup: PhaseSetup,
    generator: torch.Generator,
    number: int,
    on_features: bool,
) -> tuple[EpochScores, Classifier]:
    """Train one epoch on what the phase steps through (cached bottom activations, cached
    features, or images) and validate; the scores and the model that was validated."""
    bottom, optimizer, scheduler = setup.bottom, setup.optimizer, setup.scheduler
    validated: Classifier = ctx.model
    if bottom is not None and bottom.cached:
        train_loss, train_acc = train_top_epoch(ctx, bottom, optimizer, scheduler, generator, number)
        val_loss, val_acc = evaluate_top(ctx, bottom)
    elif on_features:
        train_loss, train_acc = train_head_epoch(ctx, optimizer, scheduler, generator, number)
        val_loss, val_acc = evaluate_head(ctx)
    else:
        train_loss, train_acc = train_network_epoch(
            ctx, setup.network, optimizer, scheduler, generator, number, head_only=phase.head_only
        )
        sync_buffers(ctx.model, ctx.ranks)
        validated = validation_model(ctx)  # the weight average when one is kept
        val_loss, val_acc = evaluate_network(ctx, validated)
    return EpochScores(train_loss, train_acc, val_loss, val_acc), validated


def _epoch_record(
    ctx: Context,
    phase: Phase,
    number: int,
    scores: EpochScores,
    target: tuple[float, float] | None,
    optimizer: torch.optim.Optimizer,
    tick: float,
    tick_cpu: float,
) -> EpochRecord:
    """The history row of epoch ``number``; its times run from ``tick`` (wall) and ``tick_cpu`` to now."""
    return EpochRecord(
        epoch=number,
        phase=phase.name,
        train_loss=round(scores.train_loss, 6),
        train_acc=round(scores.train_acc, 6),
        val_loss=round(scores.val_loss, 6),
        val_acc=round(scores.val_acc, 6),
        lr=float(f"{optimizer.param_groups[-1]['lr']:.3g}"),
        seconds=round(time.perf_counter() - tick, 3),
        cpu_seconds=round(time.process_time() - tick_cpu, 3),
        target_val_loss=round(target[0], 6) if target else None,
        target_val_acc=round(target[1], 6) if target else None,
        val_auc=None if ctx.val_auc is None else round(ctx.val_auc, 6),
    )


def _epoch_line(row: EpochRecord, scores: EpochScores, target: tuple[float, float] | None, improved: bool) -> str:
    """The epoch's log line; a star marks an epoch whose weights are the best so far."""
    target_text = f" | target loss {target[0]:.4f} acc {target[1]:.4f}" if target else ""
    return (
        f"epoch {row.epoch:3d} {row.phase:7s} train loss {scores.train_loss:.4f} acc {scores.train_acc:.4f} | "
        f"val loss {scores.val_loss:.4f} acc {scores.val_acc:.4f}{target_text}{' *' if improved else '  '} | {row.seconds:6.1f} s"
    )


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
