"""Figures drawn from real run directories: what they plot is what the runs recorded."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cxrlab.core.metrics import expected_calibration_error, roc_auc, roc_curve
from cxrlab.evaluate.cam import read_images
from cxrlab.report import curves, figures
from cxrlab.report.compare import run_confusion
from cxrlab.report.scored import confident_mistakes, scored_set
from cxrlab.training.records import list_runs


@pytest.fixture(scope="module")
def runs(tiny_study):
    return {r.run_id: r for r in list_runs(tiny_study / "runs")}


def texts(figure) -> list[str]:
    """Every piece of text drawn on the figure (titles, labels, legends, annotations)."""
    from matplotlib.text import Text

    return [t.get_text() for t in figure.findobj(Text) if t.get_text()]


def test_history_figure_plots_the_recorded_curves_and_shades_the_head_phase(runs, tmp_path):
    run = runs["efficientnet_lite0-gradual"]
    figure = figures.history_figure(run, "gradual run")
    loss_axes, acc_axes = figure.axes
    lines = {line.get_label(): line for line in loss_axes.get_lines()}
    assert list(lines["validation"].get_ydata()) == [r.val_loss for r in run.epochs]
    assert list(lines["train"].get_xdata()) == [r.epoch for r in run.epochs]
    acc = {line.get_label(): line for line in acc_axes.get_lines()}
    assert np.allclose(acc["validation"].get_ydata(), [100 * r.val_acc for r in run.epochs])
    labels = texts(figure)
    assert "head only (backbone frozen)" in labels
    assert f"kept epoch ({run.metrics.best_epoch})" in labels
    assert {"epoch", "loss (cross-entropy)", "accuracy at the argmax (%)", "gradual run"} <= set(labels)
    # A run with one phase has nothing to shade.
    assert "head only (backbone frozen)" not in texts(figures.history_figure(runs["efficientnet_lite0-finetune"]))
    path = figures.save_png(figure, tmp_path / "curves.png")
    width, height = Image.open(path).size  # 10 x 4.2 inches at 100 dpi, give or take the tight crop
    assert abs(width - 1000) <= 30 and abs(height - 420) <= 30


def test_overlay_of_several_runs(runs):
    chosen = [
        runs["efficientnet_lite0-finetune"],
        runs["efficientnet_lite0-frozen"],
        runs["efficientnet_lite0-gradual"],
    ]
    figure = figures.history_overlay_figure(chosen, ["fine-tune", "frozen", "gradual"], "modes")
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == ["fine-tune", "frozen", "gradual"]
    # Validation solid, train dashed: two lines per run on each panel.
    assert len(figure.axes[0].get_lines()) == 2 * len(chosen)
    assert "shaded: the head-only phase of gradual runs" in figure.get_suptitle()


def test_roc_and_precision_recall_curves_are_the_runs_test_predictions(runs):
    chosen = [runs["scratch_cnn-scratch-lr=1e-3"], runs["efficientnet_lite0-frozen"]]
    inputs = [curves.curve_input(scored_set(run), label) for run, label in zip(chosen, ["scratch", "frozen"])]
    figure = curves.roc_figure(inputs)
    axes = figure.axes[0]
    for label in ["scratch", "frozen"]:
        test = scored_set(chosen[0] if label == "scratch" else chosen[1])
        fpr, tpr, _ = roc_curve(test.labels, test.probs[:, test.positive], positive=test.positive)
        auc = roc_auc(test.labels, test.probs[:, test.positive], positive=test.positive)
        line = next(ln for ln in axes.get_lines() if ln.get_label().startswith(label + " "))
        assert np.allclose(line.get_xdata(), fpr) and np.allclose(line.get_ydata(), tpr)
        assert line.get_label() == f"{label} (AUC {auc:.3f})"
    assert axes.get_xlabel() == "false positive rate (1 − specificity)"
    pr = curves.precision_recall_figure(inputs)
    assert pr.axes[0].get_xlabel() == "recall (sensitivity)"
    assert sum(1 for line in pr.axes[0].get_lines() if "(AP " in line.get_label()) == 2


def test_three_class_roc_draws_one_curve_per_class():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 10)
    probs = rng.dirichlet([1, 1, 1], 30)
    curve = curves.CurveInput("run", labels, probs, ["NORMAL", "BACTERIA", "VIRUS"], 1, None)
    names = [ln.get_label() for ln in curves.roc_figure([curve]).axes[0].get_lines()]
    assert sum("vs rest" in n for n in names) == 3
    assert np.allclose(
        figures.confusion_figure(np.eye(3, dtype=int) * 5, curve.classes, "3 classes")
        .axes[0]
        .get_images()[0]
        .get_array(),
        np.eye(3),
    )


def test_confusion_matrix_shows_the_counts(runs):
    run = runs["efficientnet_lite0-frozen"]
    matrix = run_confusion(run)
    assert matrix.tolist() == run.metrics.confusion_matrix
    annotations = texts(figures.confusion_figure(matrix, run.classes, "frozen"))
    for t in range(2):
        for p in range(2):
            assert any(a.startswith(f"{matrix[t, p]}\n") for a in annotations)
    assert {"true class", "predicted class", "share of the true class"} <= set(annotations)


def test_reliability_diagram_reports_each_runs_ece(runs):
    chosen = [runs["scratch_cnn-scratch-lr=1e-3"], runs["efficientnet_lite0-finetune"]]
    inputs = [curves.curve_input(scored_set(run), label) for run, label in zip(chosen, ["a", "b"])]
    figure = curves.reliability_figure(inputs)
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    for curve, label in zip(inputs, ["a", "b"]):
        ece = expected_calibration_error(curve.labels, curve.probs)
        assert f"{label} (ECE {ece:.3f})" in legend
    counts = sum(bar.get_height() for bar in figure.axes[1].patches)
    assert counts == 2 * len(inputs[0].labels)


def test_training_time_bars_are_the_recorded_seconds(runs):
    chosen = list(runs.values())
    seconds = [r.metrics.train_seconds for r in chosen]
    figure = figures.training_time_figure([r.run_id for r in chosen], seconds, [r.config.mode for r in chosen])
    widths = [bar.get_width() for bar in figure.axes[0].patches]
    assert widths == pytest.approx(seconds)
    assert figure.axes[0].get_xlabel().startswith("training time (s)")
    assert [t.get_text() for t in figure.axes[0].get_legend().get_texts()] == [
        "fine-tune",
        "gradual unfreezing",
        "fixed feature extractor",
        "from scratch",
    ]


def test_mistakes_grid_from_the_original_files(runs, tmp_path):
    # The run with the most test mistakes.
    test = min((scored_set(r) for r in runs.values()), key=lambda t: t.correct.sum())
    wrong = confident_mistakes(test, 4)
    assert all(not test.correct[i] for i in wrong)
    confidence = test.probs[wrong, test.predicted[wrong]]
    assert list(confidence) == sorted(confidence, reverse=True)
    if len(wrong) == 0:
        pytest.skip("this run made no test mistakes")
    pixels, found = read_images([test.paths[i] for i in wrong], 96)
    assert found.all()
    figure = figures.mistakes_figure(
        list(pixels),
        [test.paths[i] for i in wrong],
        [test.classes[test.labels[i]] for i in wrong],
        [test.classes[test.predicted[i]] for i in wrong],
        list(confidence),
        "mistakes",
    )
    shown = [axes.get_images()[0].get_array() for axes in figure.axes if axes.get_images()]
    assert len(shown) == len(wrong) and np.array_equal(shown[0], pixels[0])
    captions = texts(figure)
    assert any(c.startswith(test.paths[wrong[0]].rsplit("/", 1)[1][:20]) for c in captions)
    figures.save_png(figure, tmp_path / "mistakes.png")


def test_dollar_signs_in_data_text_are_drawn_verbatim(tmp_path):
    image = np.zeros((8, 8), dtype=np.uint8)
    figure = figures.image_grid_figure([image], ["cost $5 and $x^2$.png"], "run $1$")
    path = figures.save_png(figure, tmp_path / "dollars.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert r"cost \$5 and \$x^2\$.png" in texts(figure)


# --- figures that hold up: short runs, long names, legends outside the data ------------------------


def legend_texts(figure):
    return [
        t
        for legend in figure.legends + [a.get_legend() for a in figure.axes if a.get_legend()]
        for t in legend.get_texts()
    ]


def overlaps(a, b) -> bool:
    """Whether two display-space boxes share area (touching edges do not count)."""
    return a.x0 < b.x1 - 1 and b.x0 < a.x1 - 1 and a.y0 < b.y1 - 1 and b.y0 < a.y1 - 1


def test_short_runs_get_whole_epochs_visible_points_and_outside_legends(runs):
    one_epoch = runs["efficientnet_lite0-gradual"]
    figure = figures.history_figure(one_epoch)
    figure.canvas.draw()
    epochs = [r.epoch for r in one_epoch.epochs]
    for axes in figure.axes:
        assert list(axes.get_xticks()) == epochs, "a tick per epoch, whole epochs only"
        lines = [line for line in axes.get_lines() if line.get_label() in ("train", "validation")]
        assert all(line.get_marker() not in (None, "None", "") and line.get_markersize() >= 6 for line in lines)
        train = next(line for line in lines if line.get_label() == "train")
        assert train.get_markerfacecolor() == "none", "hollow train points never hide the validation points"
        (legend,) = figure.legends
        assert not overlaps(legend.get_window_extent(), axes.get_window_extent())
    chosen = [runs["scratch_cnn-scratch-lr=1e-3"], runs["scratch_cnn-scratch-lr=3e-3"]]
    overlay = figures.history_overlay_figure(chosen, ["a", "b"], "two scratch runs")
    overlay.canvas.draw()
    xs = [tuple(line.get_xdata()) for line in overlay.axes[0].get_lines()[::2]]
    assert xs[0] != xs[1], "two runs at the same epochs are set apart"
    assert {line.get_marker() for line in overlay.axes[0].get_lines()[::2]} == {"o", "s"}
    for axes in overlay.axes:
        assert not overlaps(overlay.legends[0].get_window_extent(), axes.get_window_extent())


def test_roc_and_pr_legends_sit_outside_the_curves(runs):
    inputs = [curves.curve_input(scored_set(run), run.run_id) for run in runs.values()]
    for figure in (
        curves.roc_figure(inputs),
        curves.precision_recall_figure(inputs),
        curves.reliability_figure(inputs),
    ):
        figure.canvas.draw()
        (legend,) = figure.legends
        for axes in figure.axes:
            assert not overlaps(legend.get_window_extent(), axes.get_window_extent())
        assert all(text.get_fontsize() >= 9 for text in legend.get_texts())


def test_every_legend_is_at_least_nine_points(runs):
    chosen = list(runs.values())
    inputs = [curves.curve_input(scored_set(run), run.run_id) for run in chosen]
    drawn = [
        figures.history_figure(chosen[0]),
        figures.history_overlay_figure(chosen, [r.run_id for r in chosen], "all"),
        figures.training_time_figure([r.run_id for r in chosen], [1.0] * len(chosen), [r.config.mode for r in chosen]),
        curves.roc_figure(inputs),
        curves.precision_recall_figure(inputs),
        curves.reliability_figure(inputs),
        curves.accuracy_on_the_line_figure([curves.LinePoint("a", "finetune", 0.9, 0.8)], "shifted"),
    ]
    for figure in drawn:
        texts = legend_texts(figure)
        assert texts and min(t.get_fontsize() for t in texts) >= 9


def test_long_run_names_never_squeeze_the_training_time_plot(tmp_path):
    short = figures.training_time_figure(["a", "b"], [10.0, 20.0], ["finetune", "scratch"])
    long_names = [
        "densenet121, fine-tune lr=1e-4 ep=12 wd=1e-5 bs=32 px=224 opt=adamw aug=strong seed=3",
        "resnet50, gradual unfreezing lr=3e-4 ep=30 wd=1e-4 bs=16 px=320 opt=sgd aug=light seed=0",
    ]
    long = figures.training_time_figure(long_names, [10.0, 20.0], ["finetune", "gradual"])
    widths = []
    for figure in (short, long):
        figure.canvas.draw()
        widths.append(figure.axes[0].get_window_extent().width / figure.bbox.width)
    assert widths[1] > 0.45 and widths[1] > 0.6 * widths[0], widths
    labels = [t.get_text() for t in long.axes[0].get_yticklabels()]
    assert all(len(line) <= figures.LABEL_WIDTH for label in labels for line in label.split("\n"))
    assert all(label.count("\n") <= 1 for label in labels)


def test_accuracy_on_the_line_places_each_run(tmp_path):
    points = [
        curves.LinePoint("a", "finetune", 0.95, 0.81),
        curves.LinePoint("b", "frozen", 0.92, 0.80),
        curves.LinePoint("c", "scratch", 0.88, 0.70),
    ]
    figure = curves.accuracy_on_the_line_figure(points, "shifted (validation set)")
    axes = figure.axes[0]
    dots = [line for line in axes.get_lines() if line.get_marker() == "o"]
    assert [(line.get_xdata()[0], line.get_ydata()[0]) for line in dots] == [(95.0, 81.0), (92.0, 80.0), (88.0, 70.0)]
    diagonal = next(line for line in axes.get_lines() if line.get_label() == "equal accuracy")
    assert list(diagonal.get_xdata()) == list(diagonal.get_ydata())
    assert axes.get_ylabel() == "accuracy on shifted (validation set) (%)"
    assert any(t.get_text().startswith("least squares (slope") for t in legend_texts(figure))
    width, _ = Image.open(figures.save_png(figure, tmp_path / "line.png")).size
    assert width >= 400
