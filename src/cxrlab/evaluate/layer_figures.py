"""Pictures of what transferred: CKA by depth, and the first convolution's filters side by side.

Built like the report's figures: a ``Figure`` without pyplot (no global state), rendered by
the Agg canvas, written atomically; text from the data goes through ``plain`` so that a
``$`` in a run name is not read as mathematics.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cxrlab.core.io import atomic_path
from cxrlab.core.modes import mode_colour, mode_title
from cxrlab.evaluate.similarity import Similarity
from cxrlab.training.records import RunRecord

# Colour-blind-safe (Okabe-Ito), in the order the comparisons are given.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"]


def plain(text: str) -> str:
    return str(text).replace("$", r"\$")


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight", pad_inches=0.08)
    return path


def similarity_figure(results: list[Similarity]) -> Figure:
    """Linear CKA against depth, one line per comparison with the reference network."""
    figure = _figure(max(6.0, 0.55 * len(results[0].layers) + 2), 4.2)
    axes = figure.add_subplot()
    positions = np.arange(len(results[0].layers))
    for i, result in enumerate(results):
        axes.plot(positions, result.cka, marker="o", color=COLOURS[i % len(COLOURS)], label=plain(result.other))
    axes.set_xticks(positions, [plain(name) for name in results[0].layers], rotation=45, ha="right")
    lowest = min([0.0, *[v for r in results for v in r.cka if np.isfinite(v)]])
    axes.set_ylim(lowest - 0.05 if lowest < 0 else 0, 1.05)  # the unbiased estimator can dip below 0
    axes.set_xlabel("depth (stage output)")
    axes.set_ylabel("linear CKA")
    axes.grid(alpha=0.3)
    first = results[0]
    axes.set_title(
        plain(f"Similarity to {first.reference} by depth ({first.probes} {first.split} images, {first.image_size} px)"),
        fontsize=10,
    )
    axes.legend(fontsize=9, title="compared with", title_fontsize=9)
    return figure


def filter_mosaic(weight: torch.Tensor, columns: int = 8) -> np.ndarray:
    """A first convolution's filters ``(out, in, h, w)`` as one RGB image, one tile per filter,
    scaled together to [0, 1] so that filters of one network compare with each other."""
    w = weight.detach().float().cpu()
    if w.shape[1] != 3:
        w = w.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    w = (w - w.min()) / max(float(w.max() - w.min()), 1e-12)
    count, _, h, width = w.shape
    rows = math.ceil(count / columns)
    mosaic = np.ones((rows * (h + 1) - 1, columns * (width + 1) - 1, 3), dtype=np.float32)
    for i in range(count):
        r, c = divmod(i, columns)
        mosaic[r * (h + 1) : r * (h + 1) + h, c * (width + 1) : c * (width + 1) + width] = w[i].permute(1, 2, 0).numpy()
    return mosaic


def filters_figure(named_weights: list[tuple[str, torch.Tensor]]) -> Figure:
    """The first convolution's filters of several networks, side by side."""
    figure = _figure(3.2 * len(named_weights), 3.8)
    for i, (label, weight) in enumerate(named_weights):
        axes = figure.add_subplot(1, len(named_weights), i + 1)
        axes.imshow(filter_mosaic(weight), interpolation="nearest")
        shape = "x".join(str(s) for s in weight.shape)
        axes.set_title(plain(f"{label}\n({shape})"), fontsize=9)
        axes.set_axis_off()
    figure.suptitle("First convolution's filters (each network scaled to its own range)", fontsize=10)
    return figure


def convergence_figure(runs: list[RunRecord], labels: list[str] | None = None) -> Figure:
    """Validation AUC against training seconds, one line per run, with each run's convergence
    (AUC within 0.005 of its best) marked. Lines are coloured by mode, or, given ``labels``
    (one per run), each in its own colour under its label."""
    figure = _figure(7.0, 4.2 + (0.0 if labels is None else 0.22 * ((len(runs) + 1) // 2)))
    axes = figure.add_subplot()
    labelled: set[str] = set()
    for i, run in enumerate(runs):
        rows = [r for r in run.epochs if r.val_auc is not None and np.isfinite(r.val_auc)]
        aucs = [r.val_auc for r in rows if r.val_auc is not None]  # every row's, typed as floats
        if not rows:
            continue
        start = run.metrics.train_seconds - sum(r.seconds for r in run.epochs) if run.metrics else 0.0
        seconds = start + np.cumsum([r.seconds for r in run.epochs])[[run.epochs.index(r) for r in rows]]
        mode = run.config.mode
        name = mode_title(mode) if labels is None else labels[i]
        tint = mode_colour(mode) if labels is None else COLOURS[i % len(COLOURS)]
        label = None if name in labelled else plain(name)
        labelled.add(name)
        axes.plot(seconds, aucs, marker=".", color=tint, label=label, alpha=0.8)
        if run.metrics is not None and run.metrics.converged_auc_seconds is not None:
            best = max(aucs)
            axes.plot([run.metrics.converged_auc_seconds], [best], marker="o", mfc="none", color=tint)
    axes.set_xlabel("training seconds (frozen features or activations included)")
    axes.set_ylabel("validation AUC")
    axes.set_title("Convergence: validation AUC against training time (circles: within 0.005 of the best)", fontsize=10)
    axes.grid(alpha=0.3)
    if labelled:  # below the axes: inside, a legend of many runs covers the curves
        figure.legend(loc="outside lower center", ncols=2 if labels else 4, fontsize=9, frameon=False)
    return figure
