"""Adapted variants of a run, as recorded in its run directory and applied to its model.

An adaptation to a target site changes a run's model without labels from the target: its
BatchNorm statistics re-estimated on the target's images (AdaBN, Li et al. 2016) and/or its
class prior moved to the one estimated on them (Saerens et al. 2002). ``cxrlab adapt``
estimates it (``cxrlab.evaluate.adapt``) and records it here:

    <run>/adaptations/<name>.json    what was adapted, on what, and the estimates
    <run>/adaptations/<name>.pt      the re-estimated BatchNorm buffers (methods with bn)

``evaluate``, ``predict`` and ``export`` apply a recorded variant by name; what they produce
with it is labelled as adapted and kept apart from the plain model's numbers. The weights
themselves are never changed: only BatchNorm buffers and a bias on the logits.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import read_json, write_json
from cxrlab.training.calibration import prior_log_weights, probabilities
from cxrlab.training.records import RunRecord, read_csv
from cxrlab.training.rundir import load_tensors, save_tensors

ADAPT_METHODS = ("bn", "prior", "bn+prior")
ADAPTATIONS = "adaptations"


class AdaptationRecord(BaseModel):
    """``adaptations/<name>.json``, and the ``adaptation`` entry of every adapted result."""

    model_config = ConfigDict(extra="forbid")

    name: str
    method: str  # bn, prior or bn+prior
    target: str  # the images adapted on
    n_images: int
    transductive: bool  # adapted on the very images it then scores
    bn_layers: int = 0
    temperature: float = 1.0  # the run's, applied before the prior is estimated
    source_prior: list[float] | None = None  # the prior the run's probabilities assume
    target_prior: list[float] | None = None  # estimated on the target's images
    em_iterations: int | None = None
    seconds: float = 0.0

    @property
    def uses_bn(self) -> bool:
        return "bn" in self.method.split("+")

    @property
    def uses_prior(self) -> bool:
        return "prior" in self.method.split("+")

    def log_weights(self) -> np.ndarray | None:
        """The logit bias of the prior shift (None without one)."""
        if not self.uses_prior or self.source_prior is None or self.target_prior is None:
            return None
        return prior_log_weights(self.source_prior, self.target_prior)


def check_method(method: str) -> str:
    if method not in ADAPT_METHODS:
        raise CxrlabError(f"--adapt {method}: unknown adaptation, choose one of {', '.join(ADAPT_METHODS)}")
    return method


def adaptation_name(text: str) -> str:
    """A file name from user text (letters, digits, '.', '-', '_', '+')."""
    name = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip(".-")[:80]
    if not name:
        raise CxrlabError(f"--name {text!r}: an adaptation needs a name of letters, digits, '.', '-' or '_'")
    return name


def source_prior(run: RunRecord) -> list[float]:
    """The class prior the run's probabilities are calibrated to: uniform when the loss was
    weighted by inverse class frequency (a balanced loss trains as on balanced classes), else
    the class frequencies of its train split."""
    classes = run.classes
    if run.config.class_weights == "balanced":
        return [1.0 / len(classes)] * len(classes)
    rows = [r for r in read_csv(run.path / "split.csv") if r["split"] == "train"]
    counts = np.array([sum(r["label"] == c for r in rows) for c in classes], dtype=np.float64)
    return (counts / counts.sum()).tolist()


def save_adaptation(run: RunRecord, record: AdaptationRecord, bn_state: dict | None) -> Path:
    folder = run.path / ADAPTATIONS
    folder.mkdir(exist_ok=True)
    if bn_state is not None:
        save_tensors(folder / f"{record.name}.pt", {"bn_buffers": bn_state})
    path = folder / f"{record.name}.json"
    write_json(path, record.model_dump(mode="json"))  # written last: the record says the variant is complete
    return path


def list_adaptations(run_dir: str | os.PathLike) -> list[str]:
    folder = Path(run_dir) / ADAPTATIONS
    return sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []


def load_adaptation(run: RunRecord, name: str) -> tuple[AdaptationRecord, dict | None]:
    """A recorded variant: its record and BatchNorm buffers (None for a prior shift alone)."""
    path = run.path / ADAPTATIONS / f"{name}.json"
    if not path.exists():
        known = ", ".join(list_adaptations(run.path)) or "none recorded; make one with cxrlab adapt"
        raise CxrlabError(f"run {run.run_id} has no adaptation {name!r} ({known})")
    try:
        record = AdaptationRecord.model_validate(read_json(path))
    except ValueError as exc:
        raise CxrlabError(f"{path} is not an adaptation record this cxrlab can read: rerun cxrlab adapt") from exc
    bn_state = None
    if record.uses_bn:
        tensors = run.path / ADAPTATIONS / f"{name}.pt"
        if not tensors.exists():
            raise CxrlabError(f"{tensors} is missing: rerun cxrlab adapt")
        bn_state = load_tensors(tensors)["bn_buffers"]
    return record, bn_state


def apply_bn_buffers(model: torch.nn.Module, bn_state: dict | None) -> torch.nn.Module:
    """``model`` with its BatchNorm buffers replaced by ``bn_state`` (every other tensor as it was)."""
    if bn_state:
        state = model.state_dict()
        unknown = [k for k in bn_state if k not in state]
        if unknown:
            raise CxrlabError(
                f"the adaptation does not fit this run's model (no tensor {unknown[0]}): rerun cxrlab adapt"
            )
        model.load_state_dict({**state, **bn_state})
    return model


def adapted_probabilities(logits: np.ndarray, temperature: float, record: AdaptationRecord | None) -> np.ndarray:
    """The run's probabilities (its temperature), shifted to the target prior when adapted so."""
    return probabilities(logits, temperature, record.log_weights() if record is not None else None)
