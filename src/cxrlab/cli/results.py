"""``cxrlab evaluate``, ``predict`` and ``export``: what a finished run does with new images."""

from __future__ import annotations

from typing import Literal

import typer
from rich.table import Table

from cxrlab.cli.app import app, examples, new_folder, out, print_json

METRICS = (
    "test_accuracy",
    "balanced_accuracy",
    "sensitivity",
    "specificity",
    "precision",
    "f1",
    "roc_auc",
    "test_loss",
    "ece",
    "threshold",
)
TTA_HELP = "Test-time augmentation: augmented views averaged with the plain image (default: the run's)."
BAD_IMAGE_HELP = "An undecodable image stops the command (error) or is left out with a warning (skip)."
ADAPTED_HELP = "Apply an adaptation recorded by cxrlab adapt (its name)."


def _tta_option():
    return typer.Option(None, min=0, max=64, help=TTA_HELP)


def _bad_image_option(default: str | None):
    shown = "the run's" if default is None else default
    return typer.Option(default, help=BAD_IMAGE_HELP, show_default=shown)


@app.command(
    epilog=examples(
        "cxrlab evaluate runs/RUN --data other_hospital/",
        "cxrlab evaluate runs/RUN --data DATA --top-losses 9 --out looks/",
    )
)
def evaluate(
    run_dir: str = typer.Argument(..., help="A finished run directory."),
    data: str = typer.Option(..., help="A dataset root (its test split) or a folder of class folders."),
    tta: int | None = _tta_option(),
    on_bad_image: Literal["error", "skip"] | None = _bad_image_option(None),
    top_losses: int = typer.Option(
        0, min=0, max=100, help="Draw the K most confident mistakes (and the confusion matrix) into --out."
    ),
    out_dir: str | None = typer.Option(None, "--out", help="Folder for top-losses.png and confusion.png."),
    adapt: str | None = typer.Option(
        None, help="Adapt first, without labels, on the scored images themselves: bn, prior or bn+prior."
    ),
    adapted: str | None = typer.Option(None, help=ADAPTED_HELP),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON alone."),
    allow_overlap: bool = typer.Option(
        False,
        "--allow-overlap",
        help="No warning when images trained or validated the run (the record keeps the count).",
    ),
) -> None:
    """Score a finished run on labelled data at its own threshold; the metrics and the
    per-image probabilities go into the run directory too (eval-<data>.json and .csv)."""
    from cxrlab.core.errors import CxrlabError
    from cxrlab.evaluate.runs import evaluate_run
    from cxrlab.training.records import load_run

    if top_losses and out_dir is None:
        raise CxrlabError("--top-losses draws figures: give --out FOLDER for them")
    new_folder("--out", out_dir)
    run = load_run(run_dir)
    result = evaluate_run(
        run,
        data,
        tta=tta,
        device=device,
        on_bad_image=on_bad_image,
        show_progress=not as_json,
        adapt=adapt,
        adapted=adapted,
    )
    if out_dir is not None:
        from cxrlab.report.grids import interpretation

        written = interpretation(run, data, result["predictions_file"]).write(out_dir, k=top_losses or 9)
        result["figures"] = [str(p) for p in written]
    if not allow_overlap:
        _warn_overlap(result)
    if as_json:
        print_json(result)
        return
    _print_evaluation(result)


def _print_evaluation(result: dict) -> None:
    """The evaluation for a reader: what was scored, the metrics, the confusion matrix and the
    figures written."""
    out.print(
        f"run {result['run']} on {result['data']}: {result['n_test']} test images", highlight=False, soft_wrap=True
    )
    if result["adaptation"]:
        out.print(f"ADAPTED: {adaptation_text(result['adaptation'])}", highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in METRICS:
        if result.get(key) is not None:
            table.add_row(key, f"{result[key]:.4f}")
    out.print(table)
    out.print(
        f"confusion matrix (rows true, columns predicted: {', '.join(result['per_class'])}): "
        f"{result['confusion_matrix']}"
    )
    for path in result.get("figures", []):
        out.print(f"wrote {path}", highlight=False, soft_wrap=True)


@app.command(
    epilog=examples(
        "cxrlab predict runs/RUN scan1.jpeg scan2.png",
        "cxrlab predict runs/RUN new_images/ --cam cams/ --json",
    )
)
def predict(
    run_dir: str = typer.Argument(..., help="A finished run directory."),
    images: list[str] = typer.Argument(..., help="Image files or folders of images."),
    cam: str | None = typer.Option(
        None, help="Write one Grad-CAM figure per image into this folder (colour bar, class, probability)."
    ),
    tta: int | None = _tta_option(),
    on_bad_image: Literal["error", "skip"] = _bad_image_option("error"),
    adapt: str | None = typer.Option(
        None, help="Adapt first, without labels, on the images given: bn, prior or bn+prior."
    ),
    adapted: str | None = typer.Option(None, help=ADAPTED_HELP),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
    allow_overlap: bool = typer.Option(
        False,
        "--allow-overlap",
        help="No warning when images trained or validated the run (the record keeps the count).",
    ),
) -> None:
    """The predicted class and the probability of each class, per image, at the run's own threshold."""
    import numpy as np

    from cxrlab.evaluate.runs import predict_images
    from cxrlab.training.records import load_run

    new_folder("--cam", cam)
    run = load_run(run_dir)
    predictions = predict_images(
        run, images, tta=tta, device=device, on_bad_image=on_bad_image, adapt=adapt, adapted=adapted
    )
    if cam:
        from cxrlab.report.grids import write_cam_figures

        probabilities = np.array([[p.probabilities[c] for c in run.classes] for p in predictions])
        write_cam_figures(run, [p.path for p in predictions], cam, device=device, probabilities=probabilities)
    seen = [p for p in predictions if p.seen_in]
    if seen and not allow_overlap:
        typer.echo(
            f"warning: {len(seen)} of {len(predictions)} images trained or validated this run, e.g. {seen[0].path} "
            f"({seen[0].seen_in}) (--allow-overlap silences this)",
            err=True,
        )
    if as_json:
        print_json([p.__dict__ for p in predictions])
        return
    if predictions[0].adaptation:
        typer.echo(f"ADAPTED: {predictions[0].adaptation}", err=True)
    for p in predictions:
        probs = "  ".join(f"{k} {v:.4f}" for k, v in p.probabilities.items())
        # The rule beside the numbers: at a threshold chosen on validation, p = 0.45 can be positive.
        rule = f"\t{p.positive_class} if p >= {p.threshold:.4f}" if p.threshold is not None else ""
        typer.echo(f"{p.path}\t{p.predicted}\t{probs}{rule}" + (f"\tseen in {p.seen_in}" if p.seen_in else ""))


def _warn_overlap(result: dict) -> None:
    """One line on stderr when images of the evaluation trained or validated the run."""
    overlap = result["overlap"]
    if not overlap["images"]:
        return
    rest = overlap["without_overlap"]
    scores = (
        f"on the other {rest['n']}: accuracy {rest['accuracy']:.4f}"
        + (f", AUC {rest['roc_auc']:.4f}" if rest.get("roc_auc") is not None else "")
        if rest
        else "no other images to score"
    )
    typer.echo(
        f"warning: {overlap['images']} of {result['n_test']} images trained ({overlap['train']}) or validated "
        f"({overlap['val']}) this run (by {overlap['by']}), so their scores are no test; {scores} "
        "(--allow-overlap silences this)",
        err=True,
    )


@app.command(epilog=examples("cxrlab export runs/RUN", "cxrlab export runs/RUN --format torchscript --out handover/"))
def export(
    run_dir: str = typer.Argument(..., help="A finished run directory."),
    format: str = typer.Option("onnx", help="onnx or torchscript."),
    out_dir: str | None = typer.Option(None, "--out", help="Folder to write to (default: the run directory)."),
    adapted: str | None = typer.Option(None, help=ADAPTED_HELP),
) -> None:
    """Export a run's model with a sidecar JSON that documents its preprocessing and threshold."""
    from cxrlab.training.export import export_run

    new_folder("--out", out_dir)
    for path in export_run(run_dir, format, out_dir=out_dir, adapted=adapted):
        typer.echo(str(path))


@app.command(
    epilog=examples(
        "cxrlab adapt runs/RUN --target new_site/ --method bn+prior --name site",
        "cxrlab evaluate runs/RUN --data new_site_labelled/ --adapted site",
    )
)
def adapt(
    run_dir: str = typer.Argument(..., help="A finished run directory."),
    target: str = typer.Option(..., help="A folder of the target site's images (labels, if any, are not used)."),
    method: str = typer.Option("bn+prior", help="bn (AdaBN), prior (EM class prior) or bn+prior."),
    name: str | None = typer.Option(None, help="Name of the variant (default: METHOD-FOLDER)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda or cuda:N."),
    as_json: bool = typer.Option(False, "--json", help="Print the record as JSON."),
) -> None:
    """Adapt a run to a target site without labels and record the variant in the run directory;
    evaluate, predict and export apply it with --adapted NAME."""
    from cxrlab.evaluate.adapt import adapt_run

    record = adapt_run(run_dir, target, method, name=name, device=device)
    if as_json:
        print_json(record.model_dump(mode="json"))
        return
    typer.echo(f"adaptation {record.name}: {adaptation_text(record.model_dump(mode='json'))}")


def adaptation_text(record: dict) -> str:
    """One line saying what an adapted number rests on."""
    parts = [f"{record['method']} on {record['n_images']} images of {record['target']}"]
    if record.get("transductive"):
        parts.append("the scored images themselves, without their labels")
    if record.get("target_prior"):
        parts.append("class prior " + " / ".join(f"{p:.3f}" for p in record["target_prior"]))
    return "; ".join(parts)
