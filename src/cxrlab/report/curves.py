"""Figures of predictions on an evaluation set: ROC, precision-recall, reliability, and accuracy
on the line (each run's internal test accuracy against its accuracy on an external set).

Each figure takes typed inputs (``CurveInput`` per run, ``LinePoint`` per run and set), so a
misspelt field fails where the input is built. Legends sit outside the curves, below the
axes, in 9-point type; the figure grows with the legend instead of shrinking the plot.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from cxrlab.core.metrics import expected_calibration_error, roc_auc, roc_curve
from cxrlab.core.modes import MODE_NAMES, mode_colour, mode_title
from cxrlab.report.figures import LEGEND_SIZE, colour, new_figure, plain, wrapped
from cxrlab.report.scored import ScoredSet

CLASS_STYLES = ["-", "--", ":", "-."]
LEGEND_ROW = 0.24  # inches per legend entry below the axes


@dataclass(frozen=True)
class CurveInput:
    """One run's predictions on one set, as the curve figures take them."""

    label: str
    labels: np.ndarray  # (N,) class indices
    probs: np.ndarray  # (N, C)
    classes: list[str]
    positive: int
    operating_point: tuple[float, float] | None  # (false positive rate, true positive rate) at its threshold


@dataclass(frozen=True)
class LinePoint:
    """One run's accuracy on the internal test and on an external set."""

    label: str
    mode: str
    internal: float
    external: float


def curve_input(scored: ScoredSet, label: str) -> CurveInput:
    """The arrays of one run's predictions, with its operating point at its threshold."""
    point = None
    if scored.binary and len(set(scored.labels.tolist())) == 2:
        sick = scored.labels == scored.positive
        point = (
            float((scored.predicted[~sick] == scored.positive).mean()),
            float((scored.predicted[sick] == scored.positive).mean()),
        )
    return CurveInput(label, scored.labels, scored.probs, scored.classes, scored.positive, point)


def _legend_below(figure: Figure, axes, entries: int) -> None:
    """The legend under the axes, outside the data; the figure is made taller to hold it."""
    width, height = figure.get_size_inches()
    figure.set_size_inches(width, height + LEGEND_ROW * entries)
    handles, labels = axes.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", fontsize=LEGEND_SIZE, ncols=1, frameon=False)


def _curve_classes(curve: CurveInput) -> list[tuple[str, int]]:
    if len(curve.classes) == 2:
        return [("-", curve.positive)]
    return [(CLASS_STYLES[c % len(CLASS_STYLES)], c) for c in range(len(curve.classes))]


def roc_figure(curves: list[CurveInput], title: str = "ROC curves on the test split") -> Figure:
    """ROC curves: two classes give one curve per run (the disease class), more classes one
    one-vs-rest curve per class; a dot marks each run's operating point at its threshold."""
    figure = new_figure(5.4, 5.0)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1, label="chance")
    for i, curve in enumerate(curves):
        for style, c in _curve_classes(curve):
            fpr, tpr, _ = roc_curve(curve.labels, curve.probs[:, c], positive=c)
            auc = roc_auc(curve.labels, curve.probs[:, c], positive=c)
            name = curve.label if len(curve.classes) == 2 else f"{curve.label}: {curve.classes[c]} vs rest"
            axes.plot(fpr, tpr, style, color=colour(i), drawstyle="steps-post", label=plain(f"{name} (AUC {auc:.3f})"))
        if curve.operating_point is not None:
            axes.plot(*curve.operating_point, "o", color=colour(i), markersize=7, markeredgecolor="white")
    axes.set_xlabel("false positive rate (1 − specificity)")
    axes.set_ylabel("true positive rate (sensitivity)")
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect("equal")
    axes.grid(alpha=0.3)
    dots = any(c.operating_point for c in curves)
    axes.set_title(wrapped(title, 60) + ("\n(dots: each run's operating point)" if dots else ""), fontsize=10)
    _legend_below(figure, axes, len(axes.get_legend_handles_labels()[1]))
    return figure


def precision_recall_figure(
    curves: list[CurveInput], title: str = "Precision-recall curves on the test split"
) -> Figure:
    """Precision against recall of the disease class (one-vs-rest per class for more than two),
    with the class prevalence as the no-skill line; the legend gives average precision."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure = new_figure(5.4, 5.0)
    axes = figure.subplots()
    prevalences = set()
    for i, curve in enumerate(curves):
        for style, c in _curve_classes(curve):
            truth = np.asarray(curve.labels) == c
            if truth.all() or not truth.any():
                continue
            precision, recall, _ = precision_recall_curve(truth, curve.probs[:, c])
            ap = average_precision_score(truth, curve.probs[:, c])
            name = curve.label if len(curve.classes) == 2 else f"{curve.label}: {curve.classes[c]}"
            axes.plot(
                recall, precision, style, color=colour(i), drawstyle="steps-post", label=plain(f"{name} (AP {ap:.3f})")
            )
            prevalences.add((curve.classes[c], round(float(truth.mean()), 4)))
    for name, prevalence in sorted(prevalences):
        axes.axhline(prevalence, color="#999999", linestyle=":", linewidth=1)
        axes.annotate(
            plain(f"no skill ({name}: {prevalence:.0%})"),
            (0.01, prevalence),
            fontsize=LEGEND_SIZE,
            color="#666666",
            xytext=(0, 2),
            textcoords="offset points",
        )
    axes.set_xlabel("recall (sensitivity)")
    axes.set_ylabel("precision (positive predictive value)")
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title(wrapped(title, 60), fontsize=10)
    _legend_below(figure, axes, len(axes.get_legend_handles_labels()[1]))
    return figure


def reliability_figure(
    curves: list[CurveInput], n_bins: int = 10, title: str = "Calibration on the test split"
) -> Figure:
    """Reliability diagram: accuracy against confidence (probability of the predicted class)
    in bins, per run, with the perfect-calibration diagonal; below, how many images fall in
    each bin. The legend gives each run's expected calibration error. The confidence axis
    starts at 1/C: the most probable of C classes is never less likely than that."""
    figure = new_figure(5.4, 6.2)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    floor = 1 / max(c.probs.shape[1] for c in curves) if curves else 0.0
    top.plot([floor, 1], [floor, 1], color="#999999", linestyle=":", linewidth=1, label="perfectly calibrated")
    edges = np.linspace(floor, 1, n_bins + 1)
    width = (1 - floor) / n_bins / (len(curves) + 1)
    for i, curve in enumerate(curves):
        confidence = curve.probs.max(axis=1)
        correct = curve.probs.argmax(axis=1) == curve.labels
        bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
        filled = [b for b in range(n_bins) if (bins == b).any()]
        mean_conf = [confidence[bins == b].mean() for b in filled]
        accuracy = [correct[bins == b].mean() for b in filled]
        ece = expected_calibration_error(curve.labels, curve.probs)
        top.plot(
            mean_conf, accuracy, "-o", color=colour(i), markersize=4, label=plain(f"{curve.label} (ECE {ece:.3f})")
        )
        counts = np.bincount(bins, minlength=n_bins)
        bottom.bar(edges[:-1] + width * (i + 0.5), counts, width=width, color=colour(i), align="edge")
    top.set_ylabel("accuracy in the bin")
    top.set_xlim(floor, 1.0)
    top.set_ylim(0, 1.02)
    top.grid(alpha=0.3)
    top.set_title(wrapped(title, 60) + "\n(top-label confidence; the most probable class)", fontsize=10)
    bottom.set_xlabel("confidence (probability of the most probable class)")
    bottom.set_ylabel("images")
    bottom.grid(alpha=0.3)
    # Below the axes: inside, it would hide the points it explains.
    _legend_below(figure, top, len(curves) + 1)
    return figure


def accuracy_on_the_line_figure(points: list[LinePoint], set_name: str) -> Figure:
    """Each run at (internal test accuracy, accuracy on external set ``set_name``), coloured by
    mode, with the diagonal where the two are equal and, with three runs or more, the
    least-squares line through them: runs below the diagonal lose accuracy on the shift."""
    figure = new_figure(6.0, 5.4)
    axes = figure.subplots()
    internal = np.array([100 * p.internal for p in points])
    external = np.array([100 * p.external for p in points])
    low = max(0.0, np.floor(min(internal.min(), external.min()) / 5) * 5 - 5) if points else 0.0
    axes.plot([low, 100], [low, 100], color="#999999", linestyle=":", linewidth=1, label="equal accuracy")
    if len(points) >= 3 and np.ptp(internal) > 0:
        slope, intercept = np.polyfit(internal, external, 1)
        xs = np.array([low, 100])
        axes.plot(xs, slope * xs + intercept, color="#555555", linewidth=1, label=f"least squares (slope {slope:.2f})")
    for p, x, y in zip(points, internal, external):
        axes.plot(x, y, "o", color=mode_colour(p.mode), markersize=7, markeredgecolor="white")
    modes = [m for m in MODE_NAMES if any(p.mode == m for p in points)]
    handles = axes.get_legend_handles_labels()[0] + [
        Line2D([], [], marker="o", linestyle="", color=mode_colour(m), label=mode_title(m)) for m in modes
    ]
    axes.set_xlim(low, 100.5)
    axes.set_ylim(low, 100.5)
    axes.set_aspect("equal")
    axes.set_xlabel("internal test accuracy (%)")
    axes.set_ylabel(plain(f"accuracy on {set_name} (%)"))
    axes.grid(alpha=0.3)
    axes.set_title(wrapped(f"Accuracy on the line: internal test against {set_name}", 60), fontsize=10)
    figure.set_size_inches(6.0, 5.4 + LEGEND_ROW * len(handles))
    figure.legend(handles=handles, loc="outside lower center", fontsize=LEGEND_SIZE, ncols=1, frameon=False)
    return figure
