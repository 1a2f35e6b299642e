"""Test images worth looking at: a run's most confident mistakes, and Grad-CAM over a few right
and wrong images, where the image files are on this machine."""

from __future__ import annotations

from pathlib import Path

from cxrlab.core.text import percent, slug
from cxrlab.report import figures
from cxrlab.report.document import Block, Figure, Paragraph, Subheading, table
from cxrlab.report.scored import confident_hits, confident_mistakes
from cxrlab.report.study_results import StudyResults
from cxrlab.training.records import RunRecord

CAM_CASES = 3  # right and wrong test images shown with Grad-CAM, each


def mistake_blocks(study: StudyResults, run: RunRecord, out: Path, k: int = 8) -> list[Block]:
    """The most confident mistakes, as a table of file names and, where the files exist, an
    image grid."""
    from cxrlab.evaluate.cam import read_images

    test = study.set_of(run)
    wrong = confident_mistakes(test, k)
    label = study.labels[run.run_id]
    if len(wrong) == 0:
        return [Paragraph(f"{label} made no mistakes on the test split.")]
    rows = [
        [
            test.paths[i],
            test.classes[test.labels[i]],
            test.classes[test.predicted[i]],
            percent(test.probs[i, test.predicted[i]]),
        ]
        for i in wrong
    ]
    columns = ["image", "true class", "predicted", "probability given"]
    blocks: list[Block] = [table(f"{label}: the {len(wrong)} most confident mistakes", columns, rows)]
    pixels, found = read_images([test.paths[i] for i in wrong], 224)
    shown = [j for j in range(len(wrong)) if found[j]]
    if not shown:
        return blocks + [Paragraph("The image files of these mistakes are not on this machine, so they are not shown.")]
    fig = figures.mistakes_figure(
        [pixels[j] for j in shown],
        [test.paths[wrong[j]] for j in shown],
        [rows[j][1] for j in shown],
        [rows[j][2] for j in shown],
        [float(test.probs[wrong[j], test.predicted[wrong[j]]]) for j in shown],
        f"{label}: the most confident mistakes",
    )
    path = figures.save_png(fig, out / f"mistakes-{slug(run.run_id)}.png")
    return blocks + [Figure(path, f"The test images {label} got wrong with the highest confidence.")]


def cam_blocks(study: StudyResults, run: RunRecord, out: Path, device: str) -> list[Block]:
    """Grad-CAM over a few right and a few wrong test images, where the files and the run's
    checkpoint exist."""
    from cxrlab.evaluate.cam import read_images, run_cam_overlays

    test = study.set_of(run)
    cases = list(confident_hits(test, CAM_CASES)) + list(confident_mistakes(test, CAM_CASES))
    label = study.labels[run.run_id]
    if not cases:
        return []
    if not (run.path / "model.pt").is_file():
        return [Paragraph(f"Grad-CAM of {label}: the run's checkpoint (model.pt) is not in its directory.")]
    pixels, found = read_images([test.paths[i] for i in cases], run.config.image_size)
    cases = [c for c, ok in zip(cases, found) if ok]
    if not cases:
        return [Paragraph(f"Grad-CAM of {label}: the test image files are not on this machine.")]
    overlays, maps, _ = run_cam_overlays(run, pixels[found], device, targets=test.predicted[cases])
    captions = [
        f"{'right' if test.correct[i] else 'wrong'}: true {test.classes[test.labels[i]]}\n"
        f"predicted {test.classes[test.predicted[i]]} ({test.probs[i, test.predicted[i]]:.0%})"
        + ("" if heat.max() > 0 else "\n(flat map: nothing to show)")
        for i, heat in zip(cases, maps)
    ]
    fig = figures.image_grid_figure(overlays, captions, f"{label}: Grad-CAM of the predicted class", columns=3)
    path = figures.save_png(fig, out / f"gradcam-{slug(run.run_id)}.png")
    blocks: list[Block] = [
        Subheading(f"Grad-CAM: {label}"),
        Figure(
            path,
            f"Where {label} looked (Grad-CAM at {_model_layer(run)}, red: most weight) on its most "
            f"confident right and wrong test images.",
        ),
    ]
    flat = sum(1 for heat in maps if heat.max() <= 0)
    if flat:
        blocks.append(
            Paragraph(
                f"{flat} of {len(maps)} heatmaps are flat: at {run.config.image_size} px the layer's feature map may "
                "be a single cell, or nothing in the image raised the predicted class's probability."
            )
        )
    return blocks


def _model_layer(run: RunRecord) -> str:
    from cxrlab.models.registry import model_entry

    return model_entry(run.config.model).cam_layer or "its last convolutional layer"
