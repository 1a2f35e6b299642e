"""The run's weights on disk: the best checkpoint (``model.pt``) and the resumable state after
every epoch (``last.pt``), read back by ``--resume``.

What is written follows what changed. In a head phase the backbone is frozen, so ``last.pt``
holds only the head, its optimiser and the best head so far (kilobytes, where a whole
ResNet-18 is 45 MB), and ``model.pt`` is assembled once when the phase ends; on resume the
backbone is rebuilt from the run's weights, exactly as it started, and checked against the
digest recorded with it. In a network phase everything changes every step (the moving
average of the weights too, when one is kept): both files are
written from copies on a background thread, in order, so the next epoch does not wait for
the disk; a kill leaves each file whole (written by rename), and ``history.csv`` may then be
one epoch ahead of ``last.pt``, which resume handles by redoing that epoch.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from cxrlab.core.errors import CxrlabError
from cxrlab.training.context import Context
from cxrlab.training.phases import Phase, Selection, plan_phases
from cxrlab.training.records import EpochRecord, read_csv
from cxrlab.training.rundir import check_state_fits, load_state_checked, load_tensors, save_tensors

LAST = "last.pt"
BEST = "model.pt"


def _copied(state: dict) -> dict:
    """A snapshot of a (nested) state dict that later optimiser steps cannot change."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _copied(v) for k, v in state.items()}
    if isinstance(state, list):
        return [_copied(v) for v in state]
    return state


def backbone_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def model_meta(ctx: Context, epoch: int) -> dict:
    return {"model": ctx.config.model, "classes": ctx.data.classes, "image_size": ctx.config.image_size, "epoch": epoch}


def on_improvement(ctx: Context, phase: Phase, selection: Selection) -> None:
    """The epoch just kept is the best so far: a network phase writes it now (in the
    background); a head phase writes it when the phase ends."""
    if ctx.writer.enabled and not phase.head_only:
        ctx.background.submit(
            ctx.writer.path / BEST, {"state_dict": selection.state, "meta": model_meta(ctx, selection.epoch)}
        )
        ctx.best_on_disk = selection.epoch


def write_best(ctx: Context, selection: Selection) -> None:
    """``model.pt`` from the selection, now (the end of a head phase, a divergence, the end),
    unless it holds that epoch already: the end of a run writes no second copy of the weights
    its last phase wrote."""
    ctx.background.drain()
    if ctx.writer.enabled and selection.state is not None and ctx.best_on_disk != selection.epoch:
        ctx.writer.model(selection.state, model_meta(ctx, selection.epoch))
        ctx.best_on_disk = selection.epoch


def save_checkpoint(
    ctx: Context, phase: Phase, phase_index: int, epochs_done: int, optimizer, scheduler, selection: Selection
) -> None:
    if not ctx.writer.enabled:
        return
    state = {
        "phase": phase_index,
        "epochs_done": epochs_done,
        "optimizer": _copied(optimizer.state_dict()),
        "scheduler": scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "best_epoch": selection.epoch,
        "best_score": selection.score,
        "feature_seconds": ctx.feature_seconds,
        "feature_cpu_seconds": ctx.feature_cpu_seconds,
    }
    if phase.head_only:
        if ctx.backbone_digest is None:
            ctx.backbone_digest = backbone_digest(ctx.model.backbone)
        best = selection.state or {}
        state.update(
            kind="head",
            head=_copied(ctx.model.head.state_dict()),
            best_head={k: v for k, v in best.items() if k.startswith("head.")},
            backbone_digest=ctx.backbone_digest,
        )
        save_tensors(ctx.writer.path / LAST, state)  # kilobytes: not worth a thread
    else:
        state.update(kind="network", model=_copied(ctx.model.state_dict()))
        if ctx.average is not None:
            state["average"] = _copied(ctx.average.state_dict())
        ctx.background.submit(ctx.writer.path / LAST, state)


def restore_checkpoint(ctx: Context, run_dir: Path) -> tuple[int, int, Selection]:
    """Load ``last.pt`` into ``ctx``; returns ``(phase, epochs done in it, selection)`` to go on from."""
    state = load_tensors(run_dir / LAST)
    try:
        return _restore(ctx, run_dir, state)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        # A hand-edited last.pt, or one from another run: what it lacks is named, not a traceback.
        detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc).strip().splitlines()[0][:160]
        raise CxrlabError(
            f"{run_dir / LAST} does not resume this run ({detail}): remove it to restart the run from epoch 1"
        ) from exc


def _restore(ctx: Context, run_dir: Path, state: dict) -> tuple[int, int, Selection]:
    selection = Selection(ctx.config.select, score=float(state["best_score"]), epoch=int(state["best_epoch"]))
    what = f"the run's model ({ctx.config.model})"
    if state.get("kind") == "head":
        if backbone_digest(ctx.model.backbone) != state["backbone_digest"]:
            raise CxrlabError(
                f"--resume {run_dir}: the backbone rebuilt from the run's weights differs from the one it trained on"
            )
        ctx.model.head.load_state_dict(state["head"])
        if state["best_head"]:
            selection.state = {**_copied(ctx.model.state_dict()), **state["best_head"]}
    else:
        load_state_checked(ctx.model, state["model"], run_dir / LAST, what)
        if (run_dir / BEST).exists():
            selection.state = load_tensors(run_dir / BEST).get("state_dict")
            check_state_fits(ctx.model, selection.state, run_dir / BEST, what)
    torch.set_rng_state(state["rng"])
    phases = plan_phases(ctx.config)
    phase, done = int(state["phase"]), int(state["epochs_done"])
    epochs_done = sum(p.epochs for p in phases[:phase]) + done
    # A kill between writing history.csv and last.pt leaves a row of the epoch about to be redone.
    ctx.history = [
        EpochRecord.model_validate(row) for row in read_csv(run_dir / "history.csv") if int(row["epoch"]) <= epochs_done
    ]
    ctx.feature_seconds = float(state["feature_seconds"])
    ctx.feature_cpu_seconds = float(state.get("feature_cpu_seconds", 0.0))
    if done >= phases[phase].epochs and phase + 1 < len(phases):
        phase, done = phase + 1, 0
    return phase, done, selection


def restore_optimizer(run_dir: Path, optimizer, scheduler, average=None) -> None:
    """The optimiser, schedule and weight average (when the phase keeps one) of ``last.pt``."""
    state = load_tensors(run_dir / LAST)
    try:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if average is not None and state.get("average") is not None:
            average.load_state_dict(state["average"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        detail = f"no {exc}" if isinstance(exc, KeyError) else str(exc).strip().splitlines()[0][:160]
        raise CxrlabError(
            f"{run_dir / LAST} does not resume this run ({detail}): remove it to restart the run from epoch 1"
        ) from exc
