"""``cxrlab report STUDY_DIR``: report.md and a self-contained report.html, tasks A to E.

``write_report`` reads the study's finished runs (``<study>/runs/<run>``), analyses them
(``cxrlab.report.analysis``), draws the figures into ``<study>/report_files/``, and lays the
report out as a list of sections, each a list of blocks (paragraph, findings, table,
figure). The Markdown is written from the blocks here; the HTML comes from a jinja2
template with autoescaping on, the figures embedded as base64 data URIs.

Which runs stand for a model and mode: the best by validation accuracy (ties: validation
loss). The test split never chooses anything; it is only reported.
"""

from __future__ import annotations

import base64
import os
import time
from collections import Counter
from pathlib import Path

from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import write_text
from cxrlab.core.modes import MODE_NAMES, mode_rank, mode_title
from cxrlab.evaluate.stats import N_BOOT
from cxrlab.report import figures, findings
from cxrlab.report.analysis import (
    best_run,
    confident_hits,
    confident_mistakes,
    paired_comparison,
    run_analysis,
    run_labels,
    scored_test,
)
from cxrlab.report.compare import curve_inputs, pairs_table, runs_table
from cxrlab.report.formatting import decimal, markdown_table, number_ci, percent, percent_ci, seconds
from cxrlab.training.records import DIVERGED, RunRecord, list_runs

THRESHOLD_WORDS = {
    "val-youden": "maximum of Youden's J",
    "val-balanced": "equal sensitivity and specificity",
    "0.5": "fixed at 0.5",
    "argmax": "the most probable class",
}
SELECTION_WORDS = {"val_loss": "lowest validation loss", "val_accuracy": "highest validation accuracy"}
FIGURES_FOLDER = "report_files"
CAM_CASES = 3  # right and wrong test images shown with Grad-CAM, each


def write_report(
    study_dir: str | os.PathLike, n_boot: int = N_BOOT, seed: int = 0, cam_device: str = "cpu"
) -> list[Path]:
    """Write ``report.md`` and ``report.html`` into ``study_dir``; returns their paths."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise CxrlabError(f"study directory {study_dir} does not exist: pass the folder cxrlab sweep made")
    every_run = list_runs(study_dir / "runs", finished_only=False)
    runs = [r for r in every_run if r.finished]
    if not runs:
        raise CxrlabError(f"{study_dir / 'runs'} holds no finished runs: run cxrlab sweep on the study first")
    # Diverged runs came to an end and belong in the results table; failed or still running
    # ones (another worker's) do not.
    diverged = [r for r in every_run if r.status.status == DIVERGED]
    report = build_report(study_dir, runs, n_boot=n_boot, seed=seed, cam_device=cam_device, diverged=diverged)
    markdown_path, html_path = study_dir / "report.md", study_dir / "report.html"
    write_text(markdown_path, markdown_text(report))
    write_text(html_path, html_text(report, study_dir))
    return [markdown_path, html_path]


# --- the report as sections of blocks ----------------------------------------------------------


def paragraph(text: str) -> dict:
    return {"kind": "paragraph", "text": text}


def finding_list(items: list[str]) -> dict:
    return {"kind": "findings", "items": items}


def table(caption: str, columns: list[str], rows: list[list]) -> dict:
    return {"kind": "table", "caption": caption, "columns": columns, "rows": [[str(v) for v in r] for r in rows]}


def figure(path: Path, caption: str) -> dict:
    return {"kind": "figure", "file": f"{FIGURES_FOLDER}/{path.name}", "path": path, "caption": caption}


def subheading(text: str) -> dict:
    return {"kind": "subheading", "text": text}


class Study:
    """The finished runs of a study with their analyses, labels and the runs chosen to stand
    for each model and mode; ``diverged`` runs are only listed."""

    def __init__(self, runs: list[RunRecord], n_boot: int, seed: int, diverged: list[RunRecord] | None = None):
        self.runs = runs
        self.diverged = list(diverged or [])
        self.labels = dict(zip((r.run_id for r in runs), run_labels(runs)))
        self.analyses = {
            r.run_id: {"label": self.labels[r.run_id], **run_analysis(r, n_boot=n_boot, seed=seed)} for r in runs
        }
        self.n_boot, self.seed = n_boot, seed
        self._pairs: dict[tuple[str, str], dict | None] = {}
        groups: dict[tuple[str, str], list[RunRecord]] = {}
        for run in runs:
            groups.setdefault((run.config.model, run.config.mode), []).append(run)
        self.groups = dict(sorted(groups.items(), key=lambda kv: (kv[0][0], mode_rank(kv[0][1]))))
        self.selected = {key: best_run(group) for key, group in self.groups.items()}
        self.baseline = best_run([r for r in runs if r.config.mode == "scratch"])
        self.best = best_run([r for r in self.selected.values() if r.config.mode != "scratch"]) or self.baseline

    def row(self, run: RunRecord) -> dict:
        return self.analyses[run.run_id]

    def pair(self, a: RunRecord, b: RunRecord) -> dict | None:
        """The paired test of ``a`` and ``b``; None when they were scored on other test images."""
        key = (a.run_id, b.run_id)
        if key not in self._pairs:
            try:
                self._pairs[key] = paired_comparison(
                    a, b, self.labels[a.run_id], self.labels[b.run_id], n_boot=self.n_boot, seed=self.seed
                )
            except CxrlabError:
                self._pairs[key] = None
        return self._pairs[key]

    def pairs(self, runs: list[RunRecord]) -> list[dict]:
        found = [self.pair(runs[i], runs[j]) for i in range(len(runs)) for j in range(i + 1, len(runs))]
        return [p for p in found if p is not None]

    def by_mode(self, mode: str) -> list[RunRecord]:
        return [run for (model, m), run in self.selected.items() if m == mode]


def build_report(
    study_dir: Path,
    runs: list[RunRecord],
    n_boot: int = N_BOOT,
    seed: int = 0,
    cam_device: str = "cpu",
    diverged: list[RunRecord] | None = None,
) -> dict:
    """The report as ``{"title", "summary", "sections": [{"id", "title", "blocks"}]}``,
    with its figures written into ``study_dir / report_files``. Finished ``runs`` are
    analysed; ``diverged`` ones are only listed (summary and section B)."""
    study = Study(runs, n_boot, seed, diverged)
    out = study_dir / FIGURES_FOLDER
    out.mkdir(parents=True, exist_ok=True)
    sections = [
        {"id": "task-a", "title": "A. Model selection", "blocks": section_models(study)},
        {"id": "task-b", "title": "B. Hyperparameters and results", "blocks": section_settings(study)},
        {"id": "task-c", "title": "C. The fixed feature extractor", "blocks": section_frozen(study, out)},
        {
            "id": "task-d",
            "title": "D. Comparing fine-tuning, the fixed feature extractor and training from scratch",
            "blocks": section_modes(study, out),
        },
        {
            "id": "task-e",
            "title": "E. Test analysis against the from-scratch baseline",
            "blocks": section_test(study, out, cam_device),
        },
    ]
    return {
        "title": f"Study report: {study_dir.name}",
        "summary": summary_lines(study, study_dir),
        "sections": sections,
    }


def summary_lines(study: Study, study_dir: Path) -> list[str]:
    first = study.runs[0]
    info = first.config.data_info
    n = Counter((r.scores.n_train, r.scores.n_val, r.scores.n_test) for r in study.runs)
    (n_train, n_val, n_test), _ = n.most_common(1)[0]
    finished = f"{len(study.runs)} finished run" + ("s" if len(study.runs) != 1 else "")
    diverged = f", {len(study.diverged)} diverged" if study.diverged else ""
    models = len({r.config.model for r in study.runs})
    lines = [
        f"{finished}{diverged} of {models} model{'s' if models != 1 else ''} in {study_dir}, "
        f"written {time.strftime('%Y-%m-%d %H:%M')}.",
        f"Data: {info.location} ({', '.join(first.classes)}); "
        f"{n_train} training, {n_val} validation and {n_test} test images.",
        split_statement(study),
    ]
    return lines


def split_statement(study: Study) -> str:
    """Where the test numbers come from, and what was chosen on validation instead."""
    row = study.row(study.best) if study.best else next(iter(study.analyses.values()))
    notes = [str(n) for n in study.runs[0].config.data_info.split_notes or []]
    carved = any(n.startswith("test split") for n in notes)
    rules = sorted({THRESHOLD_WORDS.get(a["threshold_rule"], a["threshold_rule"]) for a in study.analyses.values()})
    select = sorted({SELECTION_WORDS.get(a["select"], a["select"]) for a in study.analyses.values()})
    text = (
        f"Every test number comes from the test split ({row['n_test']} images, "
        f"{'carved from the training images by patient' if carved else 'the data set’s own test split'}), "
        f"scored once per run. "
        f"The epoch ({' or '.join(select)}) and the decision threshold ({', '.join(rules)}) were chosen on the "
        f"validation split ({row['n_val']} images), and the runs that stand for each model and mode below are "
        f"the best by validation accuracy: the test split chose nothing."
    )
    if notes:
        text += " Splits: " + "; ".join(str(n).rstrip(".") for n in notes) + "."
    return text


# --- A ---------------------------------------------------------------------------------------------


def section_models(study: Study) -> list[dict]:
    from cxrlab.models.cards import model_cards

    sizes = Counter(r.config.image_size for r in study.runs)
    size = sizes.most_common(1)[0][0]
    names = sorted({r.config.model for r in study.runs})
    cards = model_cards(names, image_size=size, measure=False)
    count = Counter(r.config.model for r in study.runs)
    rows = [
        [
            c["model"],
            c["description"],
            f"{c['params'] / 1e6:.2f} M",
            f"{c['trainable_frozen']:,}",
            f"{c['gflops']:.3g}",
            f"{c['imagenet_top1']:.1f}%" if c["imagenet_top1"] else "–",
            c["pretrained_weights"],
            count[c["model"]],
        ]
        for c in cards
    ]
    blocks = [
        paragraph(
            f"The models this study trained, with their size and cost at {size} px, the image size of "
            f"{'its' if len(sizes) == 1 else 'most of its'} runs (GFLOPs: one forward pass of one image; "
            f"a multiply-add counts two)."
        ),
        table(
            "Models",
            [
                "model",
                "description",
                "parameters",
                "trained when frozen (head)",
                f"GFLOPs at {size} px",
                "ImageNet top-1",
                "ImageNet weights",
                "runs",
            ],
            rows,
        ),
    ]
    sentences = []
    if len(cards) > 1:
        small, large = min(cards, key=lambda c: c["gflops"]), max(cards, key=lambda c: c["gflops"])
        sentences.append(
            f"{large['model']} costs {large['gflops'] / max(small['gflops'], 1e-9):.1f}× the compute "
            f"of {small['model']} per image ({large['gflops']:.3g} against {small['gflops']:.3g} GFLOPs "
            f"at {size} px), with {large['params'] / 1e6:.2f} M parameters against "
            f"{small['params'] / 1e6:.2f} M."
        )
    for c in cards:
        if c["trainable_frozen"] and c["pretrained_weights"] != "n/a (from scratch)":
            sentences.append(
                f"As a fixed feature extractor {c['model']} trains {c['trainable_frozen']:,} of its "
                f"{c['params']:,} parameters ({100 * c['trainable_frozen'] / c['params']:.2f}%)."
            )
    return blocks + [finding_list(sentences)] if sentences else blocks


# --- B ---------------------------------------------------------------------------------------------


def section_settings(study: Study) -> list[dict]:
    from cxrlab.report.tables import results_markdown, results_rows

    blocks: list[dict] = [
        paragraph(
            "Every setting the study ran, one row per setting, sorted by validation loss (never by a test number), "
            "with its training time, test loss and test accuracy; mean ± standard deviation over n seeds where n > 1. "
            "Training time is fitting time: every epoch, plus computing frozen features once."
        )
    ]
    rows = results_rows(study.runs + study.diverged)
    if rows:
        columns, cells = table_cells(results_markdown(rows))
        blocks.append(table("Results by setting", columns, cells))
    sentences = []
    for (model, mode), group in study.groups.items():
        sentences += findings.settings_findings(f"{model} ({mode_title(mode)})", [study.row(r) for r in group])
    if not sentences:
        sentences = [
            "No model and mode ran with more than one setting, so there is no spread of settings to "
            "weigh against the noise of the test split."
        ]
    return blocks + [finding_list(sentences)]


def table_cells(markdown: str) -> tuple[list[str], list[list[str]]]:
    """The header and cells of a Markdown pipe table (the results table is written once, as
    Markdown, and shown as a table in both outputs)."""
    lines = [line.strip() for line in markdown.splitlines() if line.strip().startswith("|")]
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    body = [row for row in split[1:] if not all(set(cell) <= set("-: ") for cell in row)]
    return split[0], body


# --- C ---------------------------------------------------------------------------------------------


def section_frozen(study: Study, out: Path) -> list[dict]:
    frozen_runs = [r for r in study.runs if r.config.mode == "frozen"]
    if not frozen_runs:
        return [finding_list(findings.nothing_to_report("fixed-feature-extractor (frozen) runs"))]
    blocks = [
        paragraph(
            "In frozen mode the pretrained backbone stays fixed (eval mode, BatchNorm statistics untouched); its pooled "
            "features are computed once and cached, and only the new linear head trains on them. Its training time "
            "counts computing the features."
        )
    ]
    rows = []
    for run in frozen_runs:
        a = study.row(run)
        epochs = max(1, a["epochs_run"] or 1)
        rows.append(
            [
                a["label"],
                a["epochs_run"],
                f"{run.config.lr:g}",
                percent_ci(a["accuracy"]),
                number_ci(a["roc_auc"]),
                decimal(a["test_loss"]),
                seconds(a["train_seconds"]),
                seconds((a["train_seconds"] or 0) / epochs),
            ]
        )
    blocks.append(
        table(
            "Fixed feature extractor runs",
            [
                "run",
                "epochs",
                "lr",
                "test accuracy (95% CI)",
                "AUC (95% CI)",
                "test loss",
                "training time",
                "time per epoch",
            ],
            rows,
        )
    )
    finetuned = [study.row(r) for r in study.by_mode("finetune")]
    blocks.append(finding_list(findings.frozen_findings([study.row(r) for r in study.by_mode("frozen")], finetuned)))
    for run in study.by_mode("frozen"):
        path = figures.save_png(
            figures.history_figure(run, f"{study.labels[run.run_id]}: training curves"),
            out / f"frozen-curves-{_slug(run.config.model)}.png",
        )
        blocks.append(
            figure(
                path,
                f"Loss and accuracy per epoch of {study.labels[run.run_id]} (the best frozen run "
                f"of {run.config.model} by validation).",
            )
        )
    return blocks


# --- D ---------------------------------------------------------------------------------------------


def section_modes(study: Study, out: Path) -> list[dict]:
    pretrained = sorted({model for (model, mode) in study.groups if mode != "scratch"})
    blocks: list[dict] = [
        paragraph(
            "For each model, the best run of each mode by validation accuracy, side by side: curves, test metrics with "
            "95% intervals, paired McNemar tests on the same test images, and training time. Gap: the generalisation "
            "gap, train − validation accuracy at the kept epoch, in percentage points. Stability: mean absolute epoch-to-epoch change of the validation "
            "loss over the last half of training (lower is steadier)."
        )
    ]
    if not pretrained:
        blocks.append(
            finding_list(
                findings.nothing_to_report(
                    "fine-tuned, frozen or gradual runs, only from-scratch ones, so no modes to compare"
                )
            )
        )
    baseline = study.baseline
    all_rows = []
    for model in pretrained:
        chosen = [study.selected[(model, mode)] for mode in MODE_NAMES if (model, mode) in study.selected]
        rows = [study.row(r) for r in chosen]
        all_rows += rows
        pairs = study.pairs(chosen)
        blocks.append(subheading(model))
        blocks.append(finding_list(findings.mode_findings(model, rows, pairs)))
        shown = chosen + ([baseline] if baseline is not None and baseline not in chosen else [])
        path = figures.save_png(
            figures.history_overlay_figure(
                shown,
                [study.labels[r.run_id] for r in shown],
                f"{model}: training curves by mode"
                + (", with the from-scratch baseline" if len(shown) > len(chosen) else ""),
            ),
            out / f"modes-curves-{_slug(model)}.png",
        )
        blocks.append(
            figure(path, f"Validation (solid) and train (dashed) loss and accuracy per epoch of {model} in each mode.")
        )
        columns, cells = runs_table(rows)
        blocks.append(table(f"{model}: the best run of each mode", columns, cells))
        if pairs:
            columns, cells = pairs_table(pairs)
            blocks.append(table(f"{model}: paired tests between modes", columns, cells))
    if baseline is not None:
        all_rows.append(study.row(baseline))
    if all_rows:
        blocks.append(subheading("Stability, generalisation and cost"))
        blocks.append(finding_list(findings.curve_findings(all_rows)))
    chosen_all = [r for r in study.selected.values()]
    path = figures.save_png(
        figures.training_time_figure(
            [study.labels[r.run_id] for r in study.runs],
            [r.scores.train_seconds for r in study.runs],
            [r.config.mode for r in study.runs],
            "Training time of every run",
        ),
        out / "training-time.png",
    )
    blocks.append(
        figure(
            path, "Training time of every run in the study (fitting: every epoch, plus computing frozen features once)."
        )
    )
    if len(chosen_all) > 1:
        columns, cells = runs_table([study.row(r) for r in chosen_all])
        blocks.append(table("All models and modes: the best run of each", columns, cells))
    return blocks


# --- E ---------------------------------------------------------------------------------------------


def section_test(study: Study, out: Path, cam_device: str) -> list[dict]:
    baseline = study.baseline
    chosen = sorted(
        study.selected.values(),
        key=lambda r: (r.config.mode == "scratch", r.config.model, mode_rank(r.config.mode)),
    )
    rows = [study.row(r) for r in chosen]
    blocks: list[dict] = [paragraph(split_statement(study))]
    baseline_pairs = [
        p
        for r in chosen
        if baseline is not None and r is not baseline
        for p in [study.pair(r, baseline)]
        if p is not None
    ]
    blocks.append(
        finding_list(
            findings.baseline_findings(rows, study.row(baseline) if baseline else None, baseline_pairs)
            + findings.sensitivity_findings(rows)
            + findings.calibration_findings(rows)
        )
    )
    columns, cells = runs_table(rows)
    blocks.append(table("Test results of the best run of each model and mode", columns, cells))
    if baseline_pairs:
        columns, cells = pairs_table(baseline_pairs)
        blocks.append(table("Each run against the from-scratch baseline (McNemar's exact test)", columns, cells))
    curves = curve_inputs(chosen, [study.labels[r.run_id] for r in chosen])
    blocks.append(
        figure(
            figures.save_png(figures.roc_figure(curves), out / "test-roc.png"),
            "ROC curves on the test split; the dots are the operating points at each run's "
            "validation-chosen threshold.",
        )
    )
    blocks.append(
        figure(
            figures.save_png(figures.precision_recall_figure(curves), out / "test-precision-recall.png"),
            "Precision-recall curves on the test split.",
        )
    )
    blocks.append(
        figure(
            figures.save_png(figures.reliability_figure(curves), out / "test-calibration.png"),
            "Reliability diagram: how often a run is right against how sure it was.",
        )
    )
    for run in chosen:
        blocks += run_test_blocks(study, run, out)
    for run in _unique([study.best, baseline]):
        blocks += cam_blocks(study, run, out, cam_device)
    return blocks


def run_test_blocks(study: Study, run: RunRecord, out: Path) -> list[dict]:
    """One run's test analysis: the confusion matrix, per-class metrics, the mistakes."""
    a = study.row(run)
    label = study.labels[run.run_id]
    role = " (the from-scratch baseline)" if run is study.baseline else ""
    blocks = [subheading(f"{label}{role}")]
    line = (
        f"Test accuracy {percent_ci(a['accuracy'])}, AUC {number_ci(a['roc_auc'])}"
        + (f" (macro one-vs-rest), balanced accuracy {percent(a['balanced_accuracy'])}" if not a["binary"] else "")
        + f", test loss {decimal(a['test_loss'])}, expected calibration error {a['ece']:.3f}"
    )
    if a["binary"]:
        line += (
            f"; sensitivity {percent_ci(a['sensitivity'])} and specificity {percent_ci(a['specificity'])} "
            f"at the threshold p({a['positive_class']}) ≥ {a['threshold']:.3f} chosen on validation "
            f"({THRESHOLD_WORDS.get(a['threshold_rule'], a['threshold_rule'])})"
        )
    blocks.append(paragraph(line + f"; kept epoch {a['best_epoch']} of {a['epochs_run']}."))
    path = figures.save_png(
        figures.confusion_figure(a["confusion_matrix"], a["classes"], f"{label}: test confusion matrix"),
        out / f"confusion-{_slug(run.run_id)}.png",
    )
    blocks.append(figure(path, f"Confusion matrix of {label} on the test split (rows: true class)."))
    per_class = [
        [name, percent(v["precision"]), percent_ci(v["recall_interval"]), f"{v['f1']:.3f}", v["support"]]
        for name, v in a["per_class"].items()
    ]
    blocks.append(
        table(f"{label}: per class", ["class", "precision", "recall (95% Wilson CI)", "F1", "test images"], per_class)
    )
    if run is study.best or run is study.baseline:
        blocks += mistake_blocks(study, run, out)
    return blocks


def mistake_blocks(study: Study, run: RunRecord, out: Path, k: int = 8) -> list[dict]:
    """The most confident mistakes, as a table of file names and, where the files exist, an
    image grid."""
    from cxrlab.evaluate.cam import read_images

    test = scored_test(run)
    wrong = confident_mistakes(test, k)
    label = study.labels[run.run_id]
    if len(wrong) == 0:
        return [paragraph(f"{label} made no mistakes on the test split.")]
    rows = [
        [
            test.paths[i],
            test.classes[test.labels[i]],
            test.classes[test.predicted[i]],
            percent(test.probs[i, test.predicted[i]]),
        ]
        for i in wrong
    ]
    blocks = [
        table(
            f"{label}: the {len(wrong)} most confident mistakes",
            ["image", "true class", "predicted", "probability given"],
            rows,
        )
    ]
    pixels, found = read_images([test.paths[i] for i in wrong], 224)
    shown = [j for j in range(len(wrong)) if found[j]]
    if shown:
        fig = figures.mistakes_figure(
            [pixels[j] for j in shown],
            [test.paths[wrong[j]] for j in shown],
            [rows[j][1] for j in shown],
            [rows[j][2] for j in shown],
            [float(test.probs[wrong[j], test.predicted[wrong[j]]]) for j in shown],
            f"{label}: the most confident mistakes",
        )
        path = figures.save_png(fig, out / f"mistakes-{_slug(run.run_id)}.png")
        blocks.append(figure(path, f"The test images {label} got wrong with the highest confidence."))
    else:
        blocks.append(paragraph("The image files of these mistakes are not on this machine, so they are not shown."))
    return blocks


def cam_blocks(study: Study, run: RunRecord, out: Path, device: str) -> list[dict]:
    """Grad-CAM over a few right and a few wrong test images, where the files exist."""
    from cxrlab.evaluate.cam import read_images, run_cam_overlays

    test = scored_test(run)
    cases = list(confident_hits(test, CAM_CASES)) + list(confident_mistakes(test, CAM_CASES))
    label = study.labels[run.run_id]
    if not cases:
        return []
    pixels, found = read_images([test.paths[i] for i in cases], run.config.image_size)
    cases = [c for c, ok in zip(cases, found) if ok]
    if not cases:
        return [paragraph(f"Grad-CAM of {label}: the test image files are not on this machine.")]
    pixels = pixels[found]
    overlays, maps, _ = run_cam_overlays(run, pixels, device, targets=test.predicted[cases])
    captions = [
        f"{'right' if test.correct[i] else 'wrong'}: true {test.classes[test.labels[i]]}\n"
        f"predicted {test.classes[test.predicted[i]]} ({test.probs[i, test.predicted[i]]:.0%})"
        + ("" if heat.max() > 0 else "\n(flat map: nothing to show)")
        for i, heat in zip(cases, maps)
    ]
    fig = figures.image_grid_figure(overlays, captions, f"{label}: Grad-CAM of the predicted class", columns=3)
    path = figures.save_png(fig, out / f"gradcam-{_slug(run.run_id)}.png")
    blocks = [
        subheading(f"Grad-CAM: {label}"),
        figure(
            path,
            f"Where {label} looked (Grad-CAM at {model_layer(run)}, red: most weight) on its most "
            f"confident right and wrong test images.",
        ),
    ]
    flat = sum(1 for heat in maps if heat.max() <= 0)
    if flat:
        blocks.append(
            paragraph(
                f"{flat} of {len(maps)} heatmaps are flat: at {run.config.image_size} px the layer's feature map may "
                "be a single cell, or nothing in the image raised the predicted class's probability."
            )
        )
    return blocks


def model_layer(run: RunRecord) -> str:
    from cxrlab.models.registry import model_entry

    return model_entry(run.config.model).cam_layer or "its last convolutional layer"


def _unique(runs: list[RunRecord | None]) -> list[RunRecord]:
    seen, unique = set(), []
    for run in runs:
        if run is not None and run.run_id not in seen:
            seen.add(run.run_id)
            unique.append(run)
    return unique


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:80]


# --- output ------------------------------------------------------------------------------------------


def markdown_text(report: dict) -> str:
    lines = [f"# {report['title']}", ""] + [f"{line}  " for line in report["summary"]] + [""]
    lines += ["Contents: " + " · ".join(f"[{s['title']}](#{s['id']})" for s in report["sections"]), ""]
    for section in report["sections"]:
        lines += [f'<a id="{section["id"]}"></a>', "", f"## {section['title']}", ""]
        for block in section["blocks"]:
            kind = block["kind"]
            if kind == "paragraph":
                lines += [block["text"], ""]
            elif kind == "subheading":
                lines += [f"### {block['text']}", ""]
            elif kind == "findings":
                lines += [f"- {item}" for item in block["items"]] + [""]
            elif kind == "table":
                lines += [f"**{block['caption']}**", "", markdown_table(block["columns"], block["rows"]), ""]
            elif kind == "figure":
                lines += [f"![{block['caption']}]({block['file']})", "", f"*{block['caption']}*", ""]
    return "\n".join(lines)


def html_text(report: dict, study_dir: Path) -> str:
    """The report as one HTML file: figures inlined, every text autoescaped."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    for section in report["sections"]:
        for block in section["blocks"]:
            if block["kind"] == "figure":
                block["src"] = "data:image/png;base64," + base64.b64encode(block["path"].read_bytes()).decode("ascii")
    return environment.get_template("report.html.j2").render(report=report)
