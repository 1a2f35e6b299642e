"""The report's figures, drawn with matplotlib into PNG files.

Each function returns a ``matplotlib.figure.Figure`` built without pyplot (no global state,
safe in worker processes; PNGs are rendered by the Agg canvas), and ``save_png`` writes one.
Every figure has a title, labelled axes with units, and a legend where there is more than
one line. Text that comes from the data (run names, file names, class names) goes through
``plain`` so that a ``$`` in a file name is not read as mathematics.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from cxrlab.core.io import atomic_path
from cxrlab.core.metrics import roc_auc, roc_curve
from cxrlab.core.modes import MODE_NAMES, mode_colour, mode_title
from cxrlab.training.records import RunRecord

# Colour-blind-safe (Okabe-Ito), in the order runs are listed.
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
CLASS_STYLES = ["-", "--", ":", "-."]
HEAD_PHASE_COLOUR = "#E69F00"


def plain(text: str) -> str:
    """Data text as matplotlib shows it verbatim (no mathtext)."""
    return str(text).replace("$", r"\$")


def wrapped(text: str, width: int = 60) -> str:
    """A title that fits its figure: data text, wrapped onto lines of ``width`` characters."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) for line in plain(text).splitlines())


def new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
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


def history_figure(run: RunRecord, title: str | None = None) -> Figure:
    """Train and validation loss and accuracy against epoch for one run, the kept epoch
    marked, and a gradual run's head-only phase shaded."""
    figure = new_figure(10, 3.8)
    loss_axes, acc_axes = figure.subplots(1, 2)
    best = run.scores.best_epoch
    span = _head_phase(run)
    for axes, kind, unit in ((loss_axes, "loss", "cross-entropy"), (acc_axes, "acc", "%")):
        for split, style in (("train", "--"), ("val", "-")):
            epochs, values = _epochs(run, f"{split}_{kind}")
            if kind == "acc":
                values = values * 100
            axes.plot(
                epochs,
                values,
                style,
                marker="o",
                markersize=3,
                color=colour(0 if split == "val" else 1),
                label="validation" if split == "val" else "train",
            )
        if span:
            axes.axvspan(*span, color=HEAD_PHASE_COLOUR, alpha=0.15, label="head only (backbone frozen)")
        if best:
            axes.axvline(best, color="#555555", linestyle=":", linewidth=1, label=f"kept epoch ({best})")
        axes.set_xlabel("epoch")
        axes.set_ylabel(f"{'loss' if kind == 'loss' else 'accuracy'} ({unit})")
        axes.set_title("loss" if kind == "loss" else "accuracy")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
    figure.suptitle(wrapped(title or run.run_id, 110))
    return figure


def history_overlay_figure(runs: list[RunRecord], labels: list[str], title: str) -> Figure:
    """Validation (solid) and train (dashed) loss and accuracy of several runs on shared axes."""
    figure = new_figure(11, 4.2)
    loss_axes, acc_axes = figure.subplots(1, 2)
    for i, (run, label) in enumerate(zip(runs, labels)):
        for axes, kind, scale in ((loss_axes, "loss", 1.0), (acc_axes, "acc", 100.0)):
            epochs, values = _epochs(run, f"val_{kind}")
            axes.plot(epochs, values * scale, "-", marker="o", markersize=3, color=colour(i), label=plain(label))
            epochs, values = _epochs(run, f"train_{kind}")
            axes.plot(epochs, values * scale, "--", color=colour(i), alpha=0.6)
            span = _head_phase(run)
            if span:
                axes.axvspan(*span, color=colour(i), alpha=0.07)
    for axes, name, unit in ((loss_axes, "loss", "cross-entropy"), (acc_axes, "accuracy", "%")):
        axes.set_xlabel("epoch")
        axes.set_ylabel(f"{name} ({unit})")
        axes.set_title(f"{name}: validation solid, train dashed")
        axes.xaxis.get_major_locator().set_params(integer=True)
        axes.grid(alpha=0.3)
    acc_axes.legend(fontsize=8, loc="best")
    if any(_head_phase(run) for run in runs):
        title += "\nshaded: the head-only phase of gradual runs"
    figure.suptitle(wrapped(title, 120))
    return figure


# --- test-set curves --------------------------------------------------------------------------


def roc_figure(curves: list[dict], title: str = "ROC curves on the test split") -> Figure:
    """ROC curves. Each curve is ``{"label", "labels", "probs", "classes", "positive",
    "operating_point": (fpr, tpr) or None}``; two classes give one curve per run (the disease
    class), more classes one one-vs-rest curve per class."""
    figure = new_figure(5.4, 5.0)
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], color="#999999", linestyle=":", linewidth=1, label="chance")
    for i, curve in enumerate(curves):
        for style, c in _curve_classes(curve):
            fpr, tpr, _ = roc_curve(curve["labels"], curve["probs"][:, c], positive=c)
            auc = roc_auc(curve["labels"], curve["probs"][:, c], positive=c)
            name = curve["label"] if len(curve["classes"]) == 2 else f"{curve['label']}: {curve['classes'][c]} vs rest"
            axes.plot(fpr, tpr, style, color=colour(i), drawstyle="steps-post", label=plain(f"{name} (AUC {auc:.3f})"))
        point = curve.get("operating_point")
        if point is not None:
            axes.plot(*point, "o", color=colour(i), markersize=7, markeredgecolor="white")
    axes.set_xlabel("false positive rate (1 − specificity)")
    axes.set_ylabel("true positive rate (sensitivity)")
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.set_aspect("equal")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower right")
    axes.set_title(
        wrapped(title, 70)
        + (
            "\n(dots: the operating point at each run's threshold)"
            if any(c.get("operating_point") for c in curves)
            else ""
        ),
        fontsize=10,
    )
    return figure


def _curve_classes(curve: dict) -> list[tuple[str, int]]:
    if len(curve["classes"]) == 2:
        return [("-", curve["positive"])]
    return [(CLASS_STYLES[c % len(CLASS_STYLES)], c) for c in range(len(curve["classes"]))]


def precision_recall_figure(curves: list[dict], title: str = "Precision-recall curves on the test split") -> Figure:
    """Precision against recall of the disease class (one-vs-rest per class for more than two),
    with the class prevalence as the no-skill line; the legend gives average precision."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure = new_figure(5.4, 5.0)
    axes = figure.subplots()
    prevalences = set()
    for i, curve in enumerate(curves):
        for style, c in _curve_classes(curve):
            truth = np.asarray(curve["labels"]) == c
            if truth.all() or not truth.any():
                continue
            precision, recall, _ = precision_recall_curve(truth, curve["probs"][:, c])
            ap = average_precision_score(truth, curve["probs"][:, c])
            name = curve["label"] if len(curve["classes"]) == 2 else f"{curve['label']}: {curve['classes'][c]}"
            axes.plot(
                recall, precision, style, color=colour(i), drawstyle="steps-post", label=plain(f"{name} (AP {ap:.3f})")
            )
            prevalences.add((curve["classes"][c], round(float(truth.mean()), 4)))
    for name, prevalence in sorted(prevalences):
        axes.axhline(prevalence, color="#999999", linestyle=":", linewidth=1)
        axes.annotate(
            plain(f"no skill ({name}: {prevalence:.0%})"),
            (0.01, prevalence),
            fontsize=7,
            color="#666666",
            xytext=(0, 2),
            textcoords="offset points",
        )
    axes.set_xlabel("recall (sensitivity)")
    axes.set_ylabel("precision (positive predictive value)")
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(0, 1.02)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="lower left")
    axes.set_title(wrapped(title, 70), fontsize=10)
    return figure


def confusion_figure(matrix, classes: list[str], title: str) -> Figure:
    """A confusion matrix with counts and the share of each true class (row)."""
    matrix = np.asarray(matrix)
    n = len(classes)
    figure = new_figure(1.6 + 1.3 * n, 1.2 + 1.2 * n)
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
    axes.set_title(wrapped(title, 12 + 9 * n), fontsize=10)
    return figure


def reliability_figure(curves: list[dict], n_bins: int = 10, title: str = "Calibration on the test split") -> Figure:
    """Reliability diagram: accuracy against confidence (probability of the predicted class)
    in bins, per run, with the perfect-calibration diagonal; below, how many images fall in
    each bin. The legend gives each run's expected calibration error. The confidence axis
    starts at 1/C: the most probable of C classes is never less likely than that."""
    from cxrlab.core.metrics import expected_calibration_error

    figure = new_figure(5.4, 6.2)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    floor = 1 / max(np.asarray(c["probs"]).shape[1] for c in curves) if curves else 0.0
    top.plot([floor, 1], [floor, 1], color="#999999", linestyle=":", linewidth=1, label="perfectly calibrated")
    edges = np.linspace(floor, 1, n_bins + 1)
    width = (1 - floor) / n_bins / (len(curves) + 1)
    for i, curve in enumerate(curves):
        probs, labels = np.asarray(curve["probs"]), np.asarray(curve["labels"])
        confidence = probs.max(axis=1)
        correct = probs.argmax(axis=1) == labels
        bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
        filled = [b for b in range(n_bins) if (bins == b).any()]
        mean_conf = [confidence[bins == b].mean() for b in filled]
        accuracy = [correct[bins == b].mean() for b in filled]
        ece = expected_calibration_error(labels, probs)
        top.plot(
            mean_conf, accuracy, "-o", color=colour(i), markersize=4, label=plain(f"{curve['label']} (ECE {ece:.3f})")
        )
        counts = np.bincount(bins, minlength=n_bins)
        bottom.bar(edges[:-1] + width * (i + 0.5), counts, width=width, color=colour(i), align="edge")
    top.set_ylabel("accuracy in the bin")
    top.set_xlim(floor, 1.0)
    top.set_ylim(0, 1.02)
    top.grid(alpha=0.3)
    top.set_title(wrapped(title, 70) + "\n(top-label confidence; the most probable class)", fontsize=10)
    bottom.set_xlabel("confidence (probability of the most probable class)")
    bottom.set_ylabel("images")
    bottom.grid(alpha=0.3)
    # Below the axes: inside, it would hide the points it explains.
    figure.legend(*top.get_legend_handles_labels(), loc="outside lower center", fontsize=7, ncols=1)
    return figure


# --- cost ---------------------------------------------------------------------------------------


def training_time_figure(
    labels: list[str], seconds: list[float], modes: list[str], title: str = "Training time per run"
) -> Figure:
    """Horizontal bars of training time (epochs plus any feature computation), coloured by mode."""
    figure = new_figure(9, 1.2 + 0.35 * len(labels))
    axes = figure.subplots()
    positions = np.arange(len(labels))[::-1]
    values = [float(s or 0.0) for s in seconds]
    axes.barh(positions, values, color=[mode_colour(m) for m in modes])
    for y, value in zip(positions, values):
        axes.annotate(_duration(value), (value, y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8)
    axes.set_yticks(positions, [plain(label) for label in labels], fontsize=8)
    axes.set_xlabel("training time (s): every epoch plus computing frozen features once")
    axes.set_xlim(0, max(values + [1e-9]) * 1.15)
    axes.grid(axis="x", alpha=0.3)
    present = [m for m in MODE_NAMES if m in modes]
    # Outside the axes: inside, it would cover the longest bar's label.
    axes.legend(
        handles=[Patch(color=mode_colour(m), label=mode_title(m)) for m in present],
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        title="mode",
        title_fontsize=8,
    )
    axes.set_title(wrapped(title, 70), fontsize=10)
    return figure


def _duration(seconds: float) -> str:
    if seconds >= 600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


# --- images ----------------------------------------------------------------------------------


def image_grid_figure(images: list[np.ndarray], captions: list[str], title: str, columns: int = 4) -> Figure:
    """A grid of images (grey uint8 or RGB) with a caption under each."""
    rows = max(1, int(np.ceil(len(images) / columns)))
    figure = new_figure(2.6 * columns, 2.9 * rows + 0.4)
    grid = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axes in grid:
        axes.axis("off")
    for axes, image, caption in zip(grid, images, captions):
        axes.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
        axes.set_title(plain(caption), fontsize=7)
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
