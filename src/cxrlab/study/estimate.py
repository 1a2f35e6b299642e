"""How long a study will take, from its settings, said before it starts and refreshed as it runs.

A run's time is images × epochs × a per-image cost. The costs come, best first, from:

1. epochs this study directory has measured (``history.csv`` of its runs: seconds per epoch
   of the same model, phase and image size);
2. ``COST_MS``: per-image costs of each registered model at 128 px, measured once on the
   2-core development machine (``bench/study_costs.py``), scaled by the square of the
   image size. Models not in the table are costed as ResNet-50.

Either way it is an estimate: the machine's load, threads and device change it, and the
sentence that gives it says which source it used. The table holds CPU time of one thread,
which other jobs on the machine barely change; on the loaded 2-core machine the first
fine-tune epoch of the offline study took 247 s of wall time where the table says 157 s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrlab.core.errors import CxrlabError
from cxrlab.training.config import TrainConfig
from cxrlab.training.phases import plan_phases
from cxrlab.training.records import load_run

REFERENCE_SIZE = 128
# Milliseconds per image at 128 px: (training step, inference). Measured with
# bench/study_costs.py (batch 16, channels_last, one thread, CPU time, so that other jobs
# on the machine do not inflate it) on an AMD EPYC core, torch 2.14.1.
COST_MS: dict[str, tuple[float, float]] = {
    "scratch_cnn": (18.6, 4.7),
    "efficientnet_lite0": (37.7, 7.9),
    "efficientnet_b0": (55.6, 12.7),
    "resnet18": (64.0, 17.0),
    "densenet121": (124.6, 30.8),
    "resnet50": (168.1, 44.7),
    "convnext_tiny": (182.9, 55.6),
}
FALLBACK_MODEL = "resnet50"
RUN_OVERHEAD_S = 5.0  # loading, building the model, checkpoints, scoring bookkeeping


@dataclass
class ImageCounts:
    """How many images each split holds (or would, once carved)."""

    train: int
    val: int
    test: int
    external: int = 0

    @classmethod
    def of_listing(cls, listing: Any, config: TrainConfig, external: int = 0) -> ImageCounts:
        """The split sizes the data layer will carve from ``listing`` (a ``SourceListing``)."""
        counts = {split: sum(1 for s in listing.splits if s == split) for split in ("train", "val", "test")}
        total = len(listing)
        test = counts["test"] or round(total * config.test_fraction)
        # A missing or tiny val/ (the Kermany download's 16 images) is carved from train/.
        val = (
            counts["val"]
            if counts["val"] >= 0.5 * config.val_fraction * total
            else round((total - test) * config.val_fraction)
        )
        return cls(train=max(total - test - val, 0), val=val, test=test, external=external)


@dataclass
class Estimator:
    """Seconds per run from a study's settings and what its runs have measured so far."""

    counts: ImageCounts | None
    measured: dict[tuple[str, str, int], list[float]] = field(default_factory=dict)  # epoch seconds

    @classmethod
    def for_study(cls, study_dir: Path | None, counts: ImageCounts | None) -> Estimator:
        """An estimator that knows the epoch times of the runs already in ``study_dir``."""
        estimator = cls(counts)
        runs_dir = study_dir / "runs" if study_dir is not None else None
        for run_dir in sorted(runs_dir.iterdir()) if runs_dir is not None and runs_dir.is_dir() else []:
            try:
                run = load_run(run_dir, require_finished=False)
            except (CxrlabError, OSError, ValueError):
                continue  # a damaged run says so when the sweep reaches it; the estimate does without
            for epoch in run.epochs:
                estimator.observe(run.config.model, epoch.phase, run.config.image_size, epoch.seconds)
        return estimator

    def observe(self, model: str, phase: str, image_size: int, seconds: float) -> None:
        self.measured.setdefault((model, phase, image_size), []).append(seconds)

    @property
    def source(self) -> str:
        """Where the estimate comes from, for the sentence that gives it."""
        parts = []
        if self.measured:
            n = sum(len(v) for v in self.measured.values())
            parts.append(f"{n} epochs measured in this study")
        parts.append("per-image costs measured on a 2-core CPU (cxrlab.study.estimate)")
        scale = "" if self.counts is None else f" over {self.counts.train} training images"
        return " and ".join(parts) + scale

    def run_seconds(self, settings: dict[str, Any]) -> float | None:
        """The wall time of one run with ``settings`` (None without image counts)."""
        if self.counts is None:
            return None
        config = TrainConfig(**settings).resolved()
        counts = self.counts
        train_ms, infer_ms = self._costs(config.model, config.image_size)
        seconds = RUN_OVERHEAD_S + (counts.test * (1 + config.tta) + counts.external) * infer_ms / 1000
        for phase in plan_phases(config):
            if phase.head_only and phase.on_features:
                # Features once (train views, val, test); head epochs on them take seconds.
                seconds += (config.feature_views * counts.train + counts.val + counts.test) * infer_ms / 1000
                seconds += phase.epochs * 0.05
                continue
            measured = self.measured.get((config.model, phase.name, config.image_size))
            if measured:
                seconds += phase.epochs * sum(measured) / len(measured)
            else:
                per_image = train_ms if not phase.head_only else infer_ms
                seconds += phase.epochs * (counts.train * per_image + counts.val * infer_ms) / 1000
        return seconds

    def epoch_seconds(self, settings: dict[str, Any]) -> float | None:
        """One epoch of the run's last phase, for "epoch N of M" lines."""
        total = self.run_seconds(settings)
        if total is None:
            return None
        config = TrainConfig(**settings).resolved()
        return total / max(1, sum(p.epochs for p in plan_phases(config)))

    def _costs(self, model: str, image_size: int) -> tuple[float, float]:
        train_ms, infer_ms = COST_MS.get(model, COST_MS.get(FALLBACK_MODEL, (50.0, 15.0)))
        scale = (image_size / REFERENCE_SIZE) ** 2
        return train_ms * scale, infer_ms * scale


def duration(seconds: float | None) -> str:
    """``45 s``, ``12 min``, ``3.5 h``; ``unknown`` for None."""
    if seconds is None:
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
