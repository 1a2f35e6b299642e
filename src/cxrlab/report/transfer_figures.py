"""Section F's figures: test accuracy and training time against freeze depth, and test accuracy
and AUC against the number of training images.

Drawn like ``cxrlab.report.figures`` (no pyplot; legends of 9 points, outside the data where
they could cover it; data text through ``plain``). Every accuracy and AUC carries its 95%
interval as an error bar. The figures take plain points, so that what they draw is what the
caller passed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from cxrlab.report.analysis import Estimate
from cxrlab.report.figures import LEGEND_SIZE, MARKERS, colour, new_figure, plain, wrapped

FULL_FINETUNE = -1.0  # where the full fine-tune (nothing frozen) sits on the depth axis


@dataclass(frozen=True)
class Point:
    """One run on a curve: where it sits, its test accuracy (and AUC) with intervals, its cost."""

    x: float
    accuracy: Estimate
    seconds: float | None = None
    auc: Estimate | None = None


@dataclass(frozen=True)
class Line:
    label: str
    points: list[Point]
    frozen: Point | None = None  # the fixed feature extractor (frozen mode), drawn apart
    frozen_label: str = "fixed feature extractor (frozen mode)"


def _error_bars(estimates: list[Estimate], scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Values and ``(2, n)`` distances to the interval's ends (0 where there is no interval)."""
    values = np.array([scale * e.estimate for e in estimates], dtype=float)
    low = np.array([scale * (e.estimate - e.low) if e.has_interval else 0.0 for e in estimates])
    high = np.array([scale * (e.high - e.estimate) if e.has_interval else 0.0 for e in estimates])
    return values, np.vstack([np.maximum(low, 0), np.maximum(high, 0)])


def _plot(axes, xs, estimates, scale, index, label, **style) -> None:
    values, errors = _error_bars(estimates, scale)
    axes.errorbar(
        xs,
        values,
        yerr=errors,
        color=colour(index),
        marker=MARKERS[index % len(MARKERS)],
        capsize=3,
        label=label,
        **style,
    )


def freeze_depth_figure(lines: list[Line], stages: int, time_words: str = "training time") -> Figure:
    """Test accuracy (95% interval) and training (or CPU) time against the number of stages frozen
    after the stem: the full fine-tune at the left end ("none"), the fixed feature extractor
    (frozen mode) at the right end, hollow, as it trains only its head."""
    figure = new_figure(11, 4.6)
    acc_axes, time_axes = figure.subplots(1, 2)
    for i, line in enumerate(lines):
        xs = [p.x for p in line.points]
        _plot(acc_axes, xs, [p.accuracy for p in line.points], 100, i, plain(line.label))
        time_axes.plot(
            xs, [_seconds(p) for p in line.points], color=colour(i), marker=MARKERS[i % len(MARKERS)], label=None
        )
        if line.frozen is not None:
            point = line.frozen
            values, errors = _error_bars([point.accuracy], 100)
            acc_axes.errorbar(
                [point.x], values, yerr=errors, color=colour(i), marker="o", mfc="none", markersize=10, capsize=3,
                linestyle="none", label=plain(line.frozen_label),
            )  # fmt: skip
            time_axes.plot([point.x], [_seconds(point)], color=colour(i), marker="o", mfc="none", markersize=10)
    ticks = sorted({p.x for line in lines for p in [*line.points, *([line.frozen] if line.frozen else [])]})
    names = [_depth_name(x, stages) for x in ticks]
    for axes in (acc_axes, time_axes):
        axes.set_xticks(ticks, names)
        axes.set_xlabel("K: stages frozen after the stem")
        axes.grid(alpha=0.3)
    acc_axes.set_ylabel("test accuracy at the run's threshold (%)")
    acc_axes.set_title("test accuracy (bars: 95% intervals)", fontsize=10)
    time_axes.set_ylabel(f"{time_words} (s)")
    time_axes.set_title(f"{time_words} (cached frozen stages included)", fontsize=10)
    handles, labels = acc_axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=LEGEND_SIZE, frameon=False)
    figure.suptitle(wrapped("Freeze depth: from the full fine-tune to the fixed feature extractor", 110))
    return figure


def _depth_name(x: float, stages: int) -> str:
    if x == FULL_FINETUNE:
        return "none\n(fine-tune)"
    if x == stages:
        return f"{int(x)}\n(all)"
    return str(int(x))


def _seconds(point: Point) -> float:
    return math.nan if point.seconds is None else float(point.seconds)


def data_size_figure(lines: list[Line]) -> Figure:
    """Test accuracy and AUC (95% intervals) against the number of training images, one line
    per variant; a log axis when the sizes span more than eightfold."""
    figure = new_figure(11, 4.4 + 0.24 * ((len(lines) + 1) // 2))
    acc_axes, auc_axes = figure.subplots(1, 2)
    sizes = [p.x for line in lines for p in line.points]
    for i, line in enumerate(lines):
        xs = [p.x for p in line.points]
        _plot(acc_axes, xs, [p.accuracy for p in line.points], 100, i, plain(line.label))
        aucs = [p.auc if p.auc is not None else Estimate(estimate=math.nan) for p in line.points]
        _plot(auc_axes, xs, aucs, 1, i, None)
    for axes in (acc_axes, auc_axes):
        if sizes and min(sizes) > 0 and max(sizes) / min(sizes) > 8:
            axes.set_xscale("log")
        axes.set_xticks(sorted(set(sizes)), [str(int(s)) for s in sorted(set(sizes))])
        axes.set_xlabel("training images")
        axes.grid(alpha=0.3)
    acc_axes.set_ylabel("test accuracy at the run's threshold (%)")
    acc_axes.set_title("test accuracy (bars: 95% intervals)", fontsize=10)
    auc_axes.set_ylabel("test AUC")
    auc_axes.set_title("test AUC (bars: 95% intervals)", fontsize=10)
    handles, labels = acc_axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=LEGEND_SIZE, frameon=False)
    figure.suptitle(wrapped("Data size: test results against the number of training images", 110))
    return figure
