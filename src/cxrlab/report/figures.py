"""The report's figures of training and cost, drawn with matplotlib into PNG files.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state,
safe in worker processes; PNGs are rendered by the Agg canvas), and ``save_png`` writes one.
Every figure has a title, labelled axes with units, and a legend where there is more than
one line, outside the data and in type of at least 9 points (the report shows figures at
their own size). Text that comes from the data (run names, file names, class names) goes
through ``plain`` so that a ``$`` in a file name is not read as mathematics. The curves of
predictions (ROC, precision-recall, calibration, accuracy on the line) are in
``cxrlab.report.curves``.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cxrlab.core.io import atomic_path
from cxrlab.core.modes import MODE_NAMES, mode_colour, mode_title
from cxrlab.core.text import seconds as duration
from cxrlab.training.records import RunRecord

# Colour-blind-safe (Okabe-Ito), in the order runs are listed.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
HEAD_PHASE_COLOUR = "#E69F00"
LEGEND_SIZE = 9  # points, at the size the report shows the figure
MIN_WIDTH = 4.6  # inches: no figure narrower than 460 px
LABEL_WIDTH = 30  # characters per line of a bar label; longer names wrap, then shorten


def plain(text: str) -> str:
    """Data text as matplotlib shows it verbatim (no mathtext)."""
    return str(text).replace("$", r"\$")


def wrapped(text: str, width: int = 60) -> str:
    """A title that fits its figure: data text, wrapped onto lines of ``width`` characters."""
    return "\n".join(textwrap.fill(line, width) for line in plain(text).splitlines())


def short_label(text: str, width: int = LABEL_WIDTH, lines: int = 2) -> str:
    """A label that never squeezes its plot: wrapped to ``lines`` lines, the rest cut to "…"."""
    parts = textwrap.wrap(plain(text), width) or [""]
    if len(parts) > lines:
        parts = parts[: lines - 1] + [textwrap.shorten(" ".join(parts[lines - 1 :]), width, placeholder=" …")]
    return "\n".join(parts)


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(max(width, MIN_WIDTH), height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | os.PathLike) -> Path:
    """Write ``figure`` as a PNG (atomically) and return its path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        # "tight" as a last guard: long class names must never be cut at the edge.
        figure.savefig(tmp, format="png", dpi=100, bbox_inches="tight", pad_inches=0.08)
    return path


def colour(index: int) -> str:
    return COLOURS[index % len(COLOURS)]


# --- curves of training --------------------------------------------------------------------


def _epochs(run: RunRecord, column: str) -> tuple[np.ndarray, np.ndarray]:
    return np.array([r.epoch for r in run.epochs]), np.array([float(getattr(r, column)) for r in run.epochs])


def _head_phase(run: RunRecord) -> tuple[float, float] | None:
    """The epochs of a gradual run's head phase, as an x range to shade."""
    head = [r.epoch for r in run.epochs if r.phase == "head"]
    network = [r for r in run.epochs if r.phase == "network"]
    if not head or not network:
        return None
    return min(head) - 0.5, max(head) + 0.5


def _epoch_axis(axes, epochs: list[int]) -> None:
    """Whole epochs on the x axis; a short run gets a tick per epoch and room beside its points."""
    axes.set_xlabel("epoch")
    axes.xaxis.get_major_locator().set_params(integer=True)
    if epochs and len(set(epochs)) <= 12:
        ticks = sorted(set(epochs))
        axes.set_xticks(ticks)
        axes.set_xlim(ticks[0] - 0.5, ticks[-1] + 0.5)
    axes.grid(alpha=0.3)


def history_figure(run: RunRecord, title: str | None = None) -> Figure:
    """Train and validation loss and accuracy against epoch for one run, the kept epoch
    marked, and a gradual run's head-only phase shaded. Validation points are filled and
    train points hollow, so that neither hides the other where they meet."""
    figure = new_figure(10, 4.2)
    loss_axes, acc_axes = figure.subplots(1, 2)
    best = run.scores.best_epoch if run.metrics is not None else None
    span = _head_phase(run)
    for axes, kind, unit in ((loss_axes, "loss", "cross-entropy"), (acc_axes, "acc", "%")):
        for split, style, marker, fill in (("train", "--", "s", "none"), ("val", "-", "o", None)):
            epochs, values = _epochs(run, f"{split}_{kind}")
            tint = colour(0 if split == "val" else 1)
            axes.plot(
                epochs,
                values * (100 if kind == "acc" else 1),
                style,
                marker=marker,
                markersize=8 if fill else 6,
                markerfacecolor=fill or tint,
                color=tint,
                label="validation" if split == "val" else "train",
            )
        if span:
            axes.axvspan(*span, color=HEAD_PHASE_COLOUR, alpha=0.15, label="head only (backbone frozen)")
        if best:
            axes.axvline(best, color="#555555", linestyle=":", linewidth=1, label=f"kept epoch ({best})")
        axes.set_ylabel(f"{'loss' if kind == 'loss' else 'accuracy at the argmax'} ({unit})")
        axes.set_title("loss" if kind == "loss" else "accuracy")
        _epoch_axis(axes, [r.epoch for r in run.epochs])
    handles, labels = loss_axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=LEGEND_SIZE, frameon=False)
    figure.suptitle(wrapped(title or run.run_id, 110))
    return figure


def history_overlay_figure(runs: list[RunRecord], labels: list[str], title: str) -> Figure:
    """Validation (solid, filled) and train (dashed, hollow) loss and accuracy of several runs
    on shared axes. With a few epochs each run's points are set slightly apart, so that runs
    at the same value do not hide each other."""
    figure = new_figure(11, 4.4 + 0.24 * ((len(runs) + 1) // 2))
    loss_axes, acc_axes = figure.subplots(1, 2)
    longest = max((len(r.epochs) for r in runs), default=0)
    dodge = 0.08 if longest <= 5 else 0.0
    for i, (run, label) in enumerate(zip(runs, labels)):
        shift = dodge * (i - (len(runs) - 1) / 2)
        marker = MARKERS[i % len(MARKERS)]
        for axes, kind, scale in ((loss_axes, "loss", 1.0), (acc_axes, "acc", 100.0)):
            epochs, values = _epochs(run, f"val_{kind}")
            axes.plot(
                epochs + shift, values * scale, "-", marker=marker, markersize=7, color=colour(i), label=plain(label)
            )
            epochs, values = _epochs(run, f"train_{kind}")
            axes.plot(
                epochs + shift, values * scale, "--", marker=marker, markersize=6, markerfacecolor="none",
                color=colour(i), alpha=0.7,
            )  # fmt: skip
            span = _head_phase(run)
            if span:
                axes.axvspan(*span, color=colour(i), alpha=0.07)
    every_epoch = sorted({r.epoch for run in runs for r in run.epochs})
    for axes, name, unit in ((loss_axes, "loss", "cross-entropy"), (acc_axes, "accuracy at the argmax", "%")):
        axes.set_ylabel(f"{name} ({unit})")
        axes.set_title(f"{name.split(' ')[0]}: validation solid, train dashed")
        _epoch_axis(axes, every_epoch)
    handles, names = acc_axes.get_legend_handles_labels()
    figure.legend(handles, names, loc="outside lower center", ncols=2, fontsize=LEGEND_SIZE, frameon=False)
    if any(_head_phase(run) for run in runs):
        title += "\nshaded: the head-only phase of gradual runs"
    figure.suptitle(wrapped(title, 120))
    return figure


# --- cost ---------------------------------------------------------------------------------------


def training_time_figure(
    labels: list[str], seconds: list[float | None], modes: list[str], title: str = "Training time per run"
) -> Figure:
    """Horizontal bars of training time (epochs plus any feature computation), coloured by mode.
    Long run names wrap and then shorten (the report lists them in full beside the figure),
    so that they never squeeze the bars."""
    short = [short_label(label) for label in labels]
    rows = sum(max(1, s.count("\n") + 1) for s in short)
    figure = new_figure(10, 1.4 + 0.22 * rows + 0.12 * len(labels))
    axes = figure.subplots()
    positions = np.arange(len(labels))[::-1]
    values = [float(s or 0.0) for s in seconds]
    axes.barh(positions, values, color=[mode_colour(m) for m in modes])
    for y, value in zip(positions, values):
        axes.annotate(duration(value), (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=9)
    axes.set_yticks(positions, short, fontsize=9)
    axes.set_xlabel("training time (s): every epoch plus computing frozen features once")
    axes.set_xlim(0, max(values + [1e-9]) * 1.18)
    axes.grid(axis="x", alpha=0.3)
    present = [m for m in MODE_NAMES if m in modes]
    # Outside the axes: inside, it would cover the longest bar's label.
    axes.legend(
        handles=[Patch(color=mode_colour(m), label=mode_title(m)) for m in present],
        fontsize=LEGEND_SIZE,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="mode",
        title_fontsize=LEGEND_SIZE,
    )
    axes.set_title(wrapped(title, 70), fontsize=10)
    return figure


# --- tables of counts and images -------------------------------------------------------------------


def confusion_figure(matrix, classes: list[str], title: str) -> Figure:
    """A confusion matrix with counts and the share of each true class (row)."""
    matrix = np.asarray(matrix)
    n = len(classes)
    figure = new_figure(2.2 + 1.3 * n, 1.6 + 1.2 * n)
    axes = figure.subplots()
    rows = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, np.maximum(rows, 1))
    image = axes.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for t in range(n):
        for p in range(n):
            axes.text(
                p,
                t,
                f"{matrix[t, p]}\n{shares[t, p]:.0%}",
                ha="center",
                va="center",
                fontsize=10,
                color="white" if shares[t, p] > 0.6 else "black",
            )
    axes.set_xticks(range(n), [plain(c) for c in classes], rotation=20 if n > 2 else 0)
    axes.set_yticks(range(n), [plain(c) for c in classes])
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    colourbar = figure.colorbar(image, ax=axes, fraction=0.046)
    colourbar.set_label("share of the true class")
    axes.set_title(wrapped(title, 16 + 9 * n), fontsize=10)
    return figure


def image_grid_figure(images: list[np.ndarray], captions: list[str], title: str, columns: int = 4) -> Figure:
    """A grid of images (grey uint8 or RGB) with a caption under each."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure = new_figure(2.6 * columns, 2.9 * rows + 0.4)
    grid = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axes in grid:
        axes.axis("off")
    for axes, image, caption in zip(grid, images, captions):
        axes.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        axes.set_title(plain(caption), fontsize=8)
    figure.suptitle(wrapped(title, 22 * columns), fontsize=10)
    return figure


def mistakes_figure(
    images: list[np.ndarray],
    names: list[str],
    true: list[str],
    predicted: list[str],
    confidence: list[float],
    title: str,
) -> Figure:
    """The most confident mistakes: each X-ray with its true class, the class predicted, and
    the probability the run gave it."""
    captions = [
        f"{_short_name(n)}\ntrue {t}, predicted {p} ({c:.0%})" for n, t, p, c in zip(names, true, predicted, confidence)
    ]
    return image_grid_figure(images, captions, title, columns=min(4, max(1, len(images))))


def _short_name(path: str, limit: int = 28) -> str:
    name = os.path.basename(path.split("#", 1)[0]) + (f"#{path.split('#', 1)[1]}" if "#" in path else "")
    return name if len(name) <= limit else name[: limit - 1] + "…"
