"""The figure of the learning-rate range test: loss against learning rate, the suggestion marked."""

from __future__ import annotations

from matplotlib.figure import Figure

from cxrlab.report import figures
from cxrlab.training.lr_find import LRFinding


def lr_find_figure(finding: LRFinding) -> Figure:
    """Smoothed training loss (and the raw loss, faint) against the learning rate on a log
    axis, with the suggested rate marked."""
    figure = figures.new_figure(8.0, 4.2)
    axes = figure.subplots()
    if finding.raw_losses:
        axes.plot(finding.lrs, finding.raw_losses, color="#999999", linewidth=0.8, alpha=0.6, label="loss per batch")
    axes.plot(finding.lrs, finding.losses, color=figures.colour(0), linewidth=1.8, label="smoothed loss")
    suggested = min(range(len(finding.lrs)), key=lambda i: abs(finding.lrs[i] - finding.suggestion))
    axes.plot(
        [finding.suggestion],
        [finding.losses[suggested]],
        "o",
        color=figures.colour(1),
        markersize=8,
        label=f"suggested lr {finding.suggestion:.2g}",
    )
    axes.set_xscale("log")
    axes.set_xlabel("learning rate (log scale)")
    axes.set_ylabel("training loss (cross-entropy)")
    # The interesting part is the descent, not the blow-up at the end: clip the axis above.
    shown = finding.losses + finding.raw_losses
    low, start = min(shown), finding.losses[0]
    top = max(start * 1.3, min(max(shown), 2 * start), low + 1e-3)
    axes.set_ylim(max(0.0, low - 0.05 * (top - low)), top)
    axes.grid(True, which="both", alpha=0.3)
    # Outside the axes: the curve is what the reader looks at, nothing may cover it.
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    axes.set_title(
        figures.wrapped(f"Learning-rate range test: {finding.model}, {finding.mode} ({finding.stopped})", 60),
        fontsize=10,
    )
    return figure
