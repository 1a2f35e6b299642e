"""Robust fine-tuning: a moving average of the weights (EMA), and WiSE-FT weight interpolation.

EMA (``--ema DECAY``): ``torch.optim.swa_utils.AveragedModel`` keeps an exponential moving
average of the weights of a network phase, updated after every optimizer step, with the
decay ramped up as ``min(decay, (1 + n) / (10 + n))`` so that a short run is not dominated by
its starting point. The average, not the live weights, is validated, selected and saved.
Its BatchNorm statistics are those of the live weights, which the average does not share, so
they are re-estimated for the averaged weights on a fixed sample of training images before
each validation (``torch.optim.swa_utils.update_bn``, as SWA does); with frozen statistics
there is nothing to re-estimate.

WiSE-FT (Wortsman et al. 2022, ``--wise``): the probe, the pretrained backbone with the head
fitted on its frozen features (the end of the gradual mode's head phase), and the selected
fine-tuned weights are mixed as ``(1 - a) probe + a fine-tuned`` for a = 0, 0.1, ..., 1, each
mixture scored on the set that chooses, and the best kept. BatchNorm running statistics are
interpolated like the weights, so a = 0 and a = 1 are the two end models exactly; with
``--freeze-bn-stats`` they are the pretrained ones at every a.
"""

from __future__ import annotations

import time

import torch
from torch.optim.swa_utils import AveragedModel

from cxrlab.core.errors import CxrlabError
from cxrlab.models.registry import Classifier
from cxrlab.training.batchnorm import reestimate_bn_stats, sample_indices
from cxrlab.training.checkpoint import model_meta
from cxrlab.training.context import Context
from cxrlab.training.epochs import evaluate_selection_set
from cxrlab.training.phases import Selection
from cxrlab.training.run_metrics import WiseCurve
from cxrlab.training.rundir import load_tensors
from cxrlab.training.runtime import use_channels_last

PROBE = "probe.pt"  # the head phase's end state, for WiSE-FT
FINETUNED = "finetuned.pt"  # the selected fine-tuned weights, when a WiSE mixture replaces them in model.pt
WISE_ALPHAS = tuple(round(0.1 * k, 1) for k in range(11))
TensorList = tuple[torch.Tensor, ...] | list[torch.Tensor]  # what AveragedModel hands its multi_avg_fn


def weight_average(model: torch.nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``model``'s parameters (buffers follow the model)."""

    def ema_update(averaged: TensorList, current: TensorList, n_averaged: torch.Tensor | int) -> None:
        n = float(n_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return AveragedModel(model, multi_avg_fn=ema_update, use_buffers=False)


def validation_model(ctx: Context) -> Classifier:
    """The weights a network epoch is validated and selected with: the moving average when one
    is kept (its BatchNorm statistics re-estimated for its own weights), else the model."""
    if ctx.average is None:
        return ctx.model
    averaged = ctx.average.module
    assert isinstance(averaged, Classifier)  # AveragedModel holds a deep copy of the Classifier
    if not ctx.config.freeze_bn_stats:
        config = ctx.config
        reestimate_bn_stats(
            averaged,
            ctx.data.images,
            sample_indices(ctx.data.indices("train"), seed=config.seed),
            ctx.device,
            batch_size=config.eval_batch_size,
            channels_last=use_channels_last(config.channels_last),
        )
    return averaged


def interpolate_weights(probe: dict, finetuned: dict, alpha: float) -> dict:
    """``(1 - alpha) probe + alpha finetuned`` for every floating tensor (``torch.lerp``, exact
    at both ends); counters come from the nearer end."""
    if probe.keys() != finetuned.keys():
        raise CxrlabError("the probe and the fine-tuned weights are of different models: rerun the run")
    mixed = {}
    for key, start in probe.items():
        end = finetuned[key]
        if start.is_floating_point():
            mixed[key] = torch.lerp(start, end.to(start.dtype), alpha)
        else:
            mixed[key] = (start if alpha < 0.5 else end).clone()
    return mixed


def keep_probe(ctx: Context) -> None:
    """At the end of the head phase: the probe's weights, in memory and in the run directory
    (a resumed run reads them back)."""
    ctx.probe_state = {k: v.detach().to("cpu", copy=True) for k, v in ctx.model.state_dict().items()}
    ctx.writer.model(ctx.probe_state, {"model": ctx.config.model, "classes": ctx.data.classes}, name=PROBE)


def probe_state(ctx: Context) -> dict:
    if ctx.probe_state is None:
        path = ctx.writer.path / PROBE
        if not path.exists():
            raise CxrlabError(f"{path} is missing: the WiSE probe of this run was lost; start a new run")
        ctx.probe_state = load_tensors(path)["state_dict"]
    return ctx.probe_state


def choose_mixture(
    ctx: Context, finetuned: dict, finetuned_epoch: int, score, chosen_on: str
) -> tuple[dict, WiseCurve]:
    """Score every mixture of the probe and ``finetuned`` with ``score(model) -> (loss,
    accuracy)`` on the set that chooses (``chosen_on``); the best by the run's selection
    metric (ties go to the larger a), and the curve."""
    started = time.perf_counter()
    probe = probe_state(ctx)
    losses, accuracies = [], []
    for alpha in WISE_ALPHAS:
        ctx.model.load_state_dict(interpolate_weights(probe, finetuned, alpha))
        loss, accuracy = score(ctx.model)
        losses.append(round(loss, 6))
        accuracies.append(round(accuracy, 6))
    if ctx.config.select == "val_loss":
        best = min(range(len(WISE_ALPHAS)), key=lambda k: (losses[k], -WISE_ALPHAS[k]))
    else:
        best = max(range(len(WISE_ALPHAS)), key=lambda k: (accuracies[k], -losses[k]))
    alpha = WISE_ALPHAS[best]
    curve = WiseCurve(
        alphas=list(WISE_ALPHAS),
        losses=losses,
        accuracies=accuracies,
        alpha=alpha,
        chosen_on=chosen_on,
        finetuned_epoch=finetuned_epoch,
        seconds=round(time.perf_counter() - started, 3),
    )
    return interpolate_weights(probe, finetuned, alpha), curve


def wise_mixture(ctx: Context, selection: Selection, log) -> WiseCurve:
    """WiSE-FT at the end of a run: the probe and the selected fine-tuned weights mixed, the
    coefficient chosen on the set that chooses; the mixture becomes the run's model.pt and
    the fine-tuned weights are kept beside it."""
    assert selection.state is not None
    finetuned = selection.state
    if (ctx.writer.path / FINETUNED).exists():
        # A run resumed after an earlier attempt mixed: model.pt may hold that mixture already.
        finetuned = load_tensors(ctx.writer.path / FINETUNED)["state_dict"]
    mixed, curve = choose_mixture(
        ctx, finetuned, selection.epoch, lambda model: evaluate_selection_set(ctx, model), ctx.selection_set
    )
    ctx.model.load_state_dict(mixed)
    ctx.writer.model(finetuned, model_meta(ctx, selection.epoch), name=FINETUNED)
    ctx.writer.model(mixed, {**model_meta(ctx, selection.epoch), "wise_alpha": curve.alpha})
    log(
        f"WiSE-FT: a = {curve.alpha:g} chosen on {ctx.selection_set} (loss {min(curve.losses):.4f}; "
        f"probe {curve.losses[0]:.4f}, fine-tuned {curve.losses[-1]:.4f}) in {curve.seconds:.1f} s"
    )
    return curve
