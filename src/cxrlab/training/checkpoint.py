"""The resumable state of a run: written after every epoch as ``last.pt``, read by ``--resume``.

It holds what the next epoch needs to continue exactly as an uninterrupted run would: the
weights, the optimiser and schedule, the moving average of the weights when one is kept, the
random state, the best epoch so far and the time the frozen features cost.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cxrlab.training.context import Context
from cxrlab.training.phases import Selection, plan_phases
from cxrlab.training.records import EpochRecord, read_csv
from cxrlab.training.rundir import load_tensors, save_tensors

LAST = "last.pt"


def save_checkpoint(
    ctx: Context, phase_index: int, epochs_done: int, optimizer, scheduler, selection: Selection
) -> None:
    if not ctx.writer.enabled:
        return
    save_tensors(
        ctx.writer.path / LAST,
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
            "average": ctx.average.state_dict() if ctx.average is not None else None,
        },
    )


def restore_checkpoint(ctx: Context, run_dir: Path) -> tuple[int, int, Selection]:
    """Load ``last.pt`` into ``ctx``; returns ``(phase, epochs done in it, selection)`` to go on from."""
    state = load_tensors(run_dir / LAST)
    ctx.model.load_state_dict(state["model"])
    torch.set_rng_state(state["rng"])
    phases = plan_phases(ctx.config)
    phase, done = int(state["phase"]), int(state["epochs_done"])
    epochs_done = sum(p.epochs for p in phases[:phase]) + done
    # A kill between writing history.csv and last.pt leaves a row of the epoch about to be redone.
    ctx.history = [
        EpochRecord.model_validate(row) for row in read_csv(run_dir / "history.csv") if int(row["epoch"]) <= epochs_done
    ]
    ctx.feature_seconds = float(state["feature_seconds"])
    selection = Selection(ctx.config.select, score=float(state["best_score"]), epoch=int(state["best_epoch"]))
    if (run_dir / "model.pt").exists():
        selection.state = load_tensors(run_dir / "model.pt")["state_dict"]
    if done >= phases[phase].epochs and phase + 1 < len(phases):
        phase, done = phase + 1, 0
    return phase, done, selection


def restore_optimizer(run_dir: Path, optimizer, scheduler, average=None) -> None:
    """The optimiser, schedule and weight average (when the phase keeps one) of ``last.pt``."""
    state = load_tensors(run_dir / LAST)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if average is not None and state.get("average") is not None:
        average.load_state_dict(state["average"])
