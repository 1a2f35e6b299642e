"""Adaptation to a target site at prediction time, from the target's images alone (no labels).

* ``bn`` (AdaBN, Li et al. 2016): every BatchNorm layer's running statistics re-estimated on
  the target's images. Covariate shift between sites (exposure, detector, processing) moves
  the activations' mean and variance; normalising with the target's own statistics moves
  them back. Only BatchNorm buffers change, never a weight.
* ``prior`` (Saerens, Latinne and Decaestecker 2002): the target's class prior estimated by
  EM from the run's probabilities on the target's images, and the probabilities moved from
  the prior the run was trained for to the estimated one (a bias on the logits). The run's
  threshold then applies to the moved probabilities.
* ``bn+prior``: AdaBN first, then the prior on the adapted model's probabilities.

``adapt_run`` records a variant in the run directory (``cxrlab adapt``); ``adapt_model``
adapts on images at hand (``evaluate --adapt`` on the scored images themselves, i.e.
transductively, and ``predict --adapt``). Both return an ``AdaptationRecord``, the label every
adapted number carries.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from cxrlab.core.errors import CxrlabError
from cxrlab.training.adaptation import (
    AdaptationRecord,
    adaptation_name,
    check_method,
    save_adaptation,
    source_prior,
)
from cxrlab.training.batchnorm import batchnorm_buffer_names, reestimate_bn_stats
from cxrlab.training.calibration import probabilities
from cxrlab.training.predict import predict_logits
from cxrlab.training.records import RunRecord, load_run
from cxrlab.training.runtime import resolve_device

# Fewer images than this say little about a site's statistics or its class prior.
MIN_ADAPT_IMAGES = 8


def em_prior(
    probs: np.ndarray, source_prior, max_iterations: int = 1000, tolerance: float = 1e-8
) -> tuple[np.ndarray, np.ndarray, int]:
    """Saerens et al. (2002): the class prior of the population behind ``probs`` (posteriors
    ``(N, C)`` calibrated under ``source_prior``), the posteriors moved to it, and the EM
    iterations taken. E-step: reweigh each posterior by target / source prior and renormalise;
    M-step: the new prior is the mean reweighed posterior."""
    probs = np.asarray(probs, dtype=np.float64)
    source = np.asarray(source_prior, dtype=np.float64)
    prior = source.copy()
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - the count is returned
        moved = probs * (prior / source)
        moved /= moved.sum(axis=1, keepdims=True)
        new_prior = moved.mean(axis=0)
        converged = np.abs(new_prior - prior).max() < tolerance
        prior = new_prior
        if converged:
            break
    moved = probs * (prior / source)
    return prior, moved / moved.sum(axis=1, keepdims=True), iterations


def adapt_model(
    run: RunRecord,
    model: torch.nn.Module,
    images: np.ndarray,
    indices: np.ndarray,
    method: str,
    device: torch.device,
    *,
    target: str,
    transductive: bool,
    name: str = "",
) -> tuple[AdaptationRecord, dict | None]:
    """Adapt ``model`` (in place) to ``images[indices]`` by ``method``; the record and the
    re-estimated BatchNorm buffers (None without bn)."""
    check_method(method)
    if len(indices) < MIN_ADAPT_IMAGES:
        raise CxrlabError(f"adapting to {target} needs at least {MIN_ADAPT_IMAGES} of its images; got {len(indices)}")
    started = time.perf_counter()
    record = AdaptationRecord(
        name=name or method,
        method=method,
        target=str(target),
        n_images=len(indices),
        transductive=transductive,
        temperature=run.temperature,
    )
    bn_state = None
    if record.uses_bn:
        record.bn_layers = reestimate_bn_stats(model, images, indices, device, run.config.eval_batch_size)
        if record.bn_layers == 0:
            raise CxrlabError(f"--adapt {method}: {run.config.model} has no BatchNorm layers to adapt")
        state = model.state_dict()
        bn_state = {k: state[k].detach().to("cpu", copy=True) for k in batchnorm_buffer_names(model)}
    if record.uses_prior:
        logits = predict_logits(model, images, indices, device, batch_size=run.config.eval_batch_size)
        record.source_prior = source_prior(run)
        prior, _, record.em_iterations = em_prior(probabilities(logits, run.temperature), record.source_prior)
        record.target_prior = [round(float(p), 6) for p in prior]
    record.seconds = round(time.perf_counter() - started, 3)
    return record, bn_state


def adapt_run(
    run: RunRecord | str | Path, target: str, method: str, *, name: str | None = None, device: str = "auto"
) -> AdaptationRecord:
    """``cxrlab adapt``: adapt ``run`` to the images under ``target`` (labels, if any, unused)
    and record the variant in the run directory as ``adaptations/<name>``."""
    from cxrlab.evaluate.runs import expand_images, readable_images

    run = run if isinstance(run, RunRecord) else load_run(run)
    check_method(method)
    files, pixels = readable_images(expand_images([target]), run.config.image_size)
    torch_device = resolve_device(device)
    model = run.load_model().to(torch_device)
    label = adaptation_name(name or f"{method}-{Path(str(target).rstrip('/')).name}")
    record, bn_state = adapt_model(
        run,
        model,
        pixels,
        np.arange(len(files)),
        method,
        torch_device,
        target=str(Path(target).expanduser().resolve()),
        transductive=False,
        name=label,
    )
    save_adaptation(run, record, bn_state)
    return record
