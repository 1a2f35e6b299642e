"""The command line: parse, call one function, print. No logic lives here."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cxrlab.errors import CxrlabError

app = typer.Typer(
    help="Transfer-learning studies for medical image classification.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Look at a data source.", no_args_is_help=True)
app.add_typer(data_app, name="data")
out = Console()


def _print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@data_app.command("inspect")
def data_inspect(
    path: str = typer.Argument(..., help="Dataset root, folder of class folders, .npz file or pneumoniamnist[:SIZE]."),
    labels: str = typer.Option("folders", help="folders, or kermany3 (NORMAL/BACTERIA/VIRUS from file names)."),
    split_seed: int = typer.Option(0, help="Seed of the patient-grouped split a run would carve."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Images per split and class, patients, sizes, duplicates and class balance."""
    from cxrlab.data.inspect import inspect_source

    summary = inspect_source(path, labels=labels, split_seed=split_seed, show_progress=not as_json)
    if as_json:
        _print_json(summary)
        return
    table = Table(
        title=f"{summary['source']} ({summary['kind']}): {summary['images']} images, {summary['patients']} patients"
    )
    table.add_column("split")
    for name in summary["classes"]:
        table.add_column(name, justify="right")
    table.add_column("images", justify="right")
    table.add_column("patients", justify="right")
    for split, info in summary["splits"].items():
        table.add_row(
            split,
            *[f"{info['classes'][c]} ({info['balance'][c]:.0%})" for c in summary["classes"]],
            str(info["images"]),
            str(info["patients"]),
        )
    out.print(table)
    sizes = ", ".join(f"{k} ({v})" for k, v in list(summary["image_sizes"].items())[:3])
    out.print(
        f"image sizes: {summary['distinct_sizes']} distinct, most common {sizes}; modes: "
        + ", ".join(f"{k} ({v})" for k, v in summary["modes"].items())
    )
    out.print(
        f"duplicates: {summary['duplicate_groups']} groups of byte-identical images "
        f"({summary['duplicate_images']} images), {summary['duplicate_groups_across_splits']} across splits; "
        f"patients in several splits: {summary['patients_in_several_splits']}"
    )
    if "run_splits" in summary:
        parts = [f"{s} " + "/".join(str(v) for v in counts.values()) for s, counts in summary["run_splits"].items()]
        out.print(f"splits a run uses (split seed {split_seed}; {'/'.join(summary['classes'])}): " + ", ".join(parts))
    if summary["unreadable"]:
        out.print(
            f"[red]{len(summary['unreadable'])} unreadable images[/red] (a run stops on them unless "
            f"--on-bad-image skip): "
            + "; ".join(escape(f"{u['path']}: {u['reason']}") for u in summary["unreadable"][:5])
        )
    if summary["ignored_files"]:
        out.print(
            f"ignored {len(summary['ignored_files'])} files that are not images (e.g. {escape(Path(summary['ignored_files'][0]).name)})"
        )
    for note in summary["notes"]:
        out.print(f"note: {escape(note)}")


@app.command()
def models(
    image_size: int = typer.Option(224, help="Image size for the FLOP count and the speed measurement."),
    measure: bool = typer.Option(False, help="Measure inference images/s on this machine (slower)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """The model registry with size, cost, ImageNet accuracy and availability (task A)."""
    from cxrlab.models.cards import model_cards

    cards = model_cards(image_size=image_size, measure=measure)
    if as_json:
        _print_json(cards)
        return
    table = Table(title=f"cxrlab models at {image_size} px (2-class head)")
    for column in ("model", "params", "trainable frozen", "GFLOPs", "ImageNet top-1", "weights", "images/s"):
        table.add_column(column, justify="left" if column in ("model", "weights") else "right")
    for c in cards:
        table.add_row(
            c["model"],
            f"{c['params']:,}",
            f"{c['trainable_frozen']:,}",
            f"{c['gflops']:.2f}",
            f"{c['imagenet_top1']:.1f}%" if c["imagenet_top1"] else "-",
            c["pretrained_weights"],
            f"{c['images_per_second']:.0f}" if c["images_per_second"] else "-",
        )
    out.print(table)


@app.command()
def train(
    data: str | None = typer.Option(None, help="Dataset root, folder of class folders, .npz or pneumoniamnist[:SIZE]."),
    model: str | None = typer.Option(None, help="A registry name (cxrlab models) or timm:<name>."),
    mode: str | None = typer.Option(None, help="finetune (default), frozen, scratch or gradual."),
    weights: str | None = typer.Option(None, help="imagenet, none or a .pt/.pth/.safetensors file."),
    labels: str | None = typer.Option(None, help="folders, or kermany3 for NORMAL/BACTERIA/VIRUS."),
    lr: float | None = typer.Option(None, help="Learning rate (default depends on the mode)."),
    epochs: int | None = typer.Option(None, help="Epochs (of the network phase in gradual mode)."),
    weight_decay: float | None = typer.Option(None),
    batch_size: int | None = typer.Option(None, help="Default 32."),
    optimizer: str | None = typer.Option(None, help="adam, adamw or sgd (momentum 0.9)."),
    scheduler: str | None = typer.Option(None, help="none, cosine or step."),
    warmup: float | None = typer.Option(None, help="Epochs of linear warmup."),
    image_size: int | None = typer.Option(None, help="Default 224."),
    augment: str | None = typer.Option(None, help="none, light or strong (batch augmentation)."),
    class_weights: str | None = typer.Option(None, help="none or balanced."),
    label_smoothing: float | None = typer.Option(None, help="Default 0."),
    select: str | None = typer.Option(None, help="val_loss or val_accuracy: which epoch's checkpoint is kept."),
    feature_views: int | None = typer.Option(
        None, help="Frozen mode with augmentation: augmented views of the features."
    ),
    head_epochs: int | None = typer.Option(None, help="Gradual mode: epochs of the head on frozen features."),
    head_lr: float | None = typer.Option(None, help="Gradual mode: learning rate of the head phase."),
    backbone_lr_scale: float | None = typer.Option(None, help="Gradual mode: backbone lr = lr x this."),
    threshold: str | None = typer.Option(None, help="0.5, val-youden (default) or val-balanced, chosen on validation."),
    tta: int | None = typer.Option(None, help="Test-time augmentation: augmented views averaged."),
    split_seed: int | None = typer.Option(None, help="Seed of the patient-grouped val/test split."),
    on_bad_image: str | None = typer.Option(None, help="error or skip."),
    cache_dir: str | None = typer.Option(None, help="Cache folder (default $CXRLAB_CACHE or ~/.cache/cxrlab)."),
    seed: int | None = typer.Option(None, help="Default 0."),
    device: str | None = typer.Option(None, help="auto, cpu or cuda."),
    deterministic: bool | None = typer.Option(
        None, "--deterministic/--no-deterministic", help="Bit-reproducible runs (default: on for CPU)."
    ),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the network."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Log to TensorBoard in the run directory."),
    distributed: bool = typer.Option(False, "--distributed", help="DistributedDataParallel under torchrun."),
    out_dir: str | None = typer.Option(None, "--out", help="Folder the run directory is made in (default runs)."),
    name: str | None = typer.Option(None, help="Run directory name (default: model-mode-time)."),
    resume: str | None = typer.Option(None, help="Continue a killed run from its run directory."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """Train one run: fine-tune, fixed feature extractor, from scratch, or gradual unfreezing."""
    from pydantic import ValidationError

    from cxrlab.train.config import TrainConfig
    from cxrlab.train.loop import fit
    from cxrlab.train.rundir import DIVERGED, run_status

    if resume is None and (data is None or model is None):
        raise CxrlabError("train needs --data and --model (or --resume RUN_DIR)")
    given = dict(
        data=data,
        model=model,
        mode=mode,
        weights=weights,
        labels=labels,
        lr=lr,
        epochs=epochs,
        weight_decay=weight_decay,
        batch_size=batch_size,
        optimizer=optimizer,
        scheduler=scheduler,
        warmup=warmup,
        image_size=image_size,
        augment=augment,
        class_weights=class_weights,
        label_smoothing=label_smoothing,
        select=select,
        feature_views=feature_views,
        head_epochs=head_epochs,
        head_lr=head_lr,
        backbone_lr_scale=backbone_lr_scale,
        threshold=threshold,
        tta=tta,
        split_seed=split_seed,
        on_bad_image=on_bad_image,
        cache_dir=cache_dir,
        seed=seed,
        device=device,
        deterministic=deterministic,
        compile=compile,
        tensorboard=tensorboard,
        distributed=distributed,
        out=out_dir,
        name=name,
    )
    # Flags left out take TrainConfig's defaults: the one place defaults are written.
    settings = {key: value for key, value in given.items() if value is not None}
    try:
        config = TrainConfig(**settings) if resume is None else None
    except ValidationError as exc:
        raise CxrlabError(validation_message(exc)) from exc
    if config is not None:
        from cxrlab.models.registry import model_entry

        model_entry(config.model)  # an unknown name fails before any data is read
    run_dir = fit(config, resume=resume, show_progress=not quiet)
    typer.echo(str(run_dir))
    if run_status(run_dir) == DIVERGED:
        raise typer.Exit(1)  # a result, not a crash: fit has said why in one line


def validation_message(exc) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "value"
    return f"--{where.replace('_', '-')}: {error['msg']} (got {error.get('input')!r})"


@app.command()
def evaluate(
    run_dir: str = typer.Argument(..., help="A finished run directory."),
    data: str = typer.Option(..., help="A dataset root (its test split) or a folder of class folders."),
    tta: int | None = typer.Option(None, help="Test-time augmentation views (default: the run's)."),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON alone."),
) -> None:
    """Score a finished run on labelled data; the metrics go into the run directory too."""
    from cxrlab.evaluate.runs import evaluate_run

    result = evaluate_run(run_dir, data, tta=tta, device=device, show_progress=not as_json)
    if as_json:
        _print_json(result)
        return
    out.print(
        f"run {result['run']} on {result['data']}: {result['n_test']} test images", highlight=False, soft_wrap=True
    )
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (
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
    ):
        if key in result and result[key] is not None:
            table.add_row(key, f"{result[key]:.4f}")
    out.print(table)
    out.print(
        f"confusion matrix (rows true, columns predicted: {', '.join(result['per_class'])}): "
        f"{result['confusion_matrix']}"
    )


@app.command()
def predict(
    run_dir: str = typer.Argument(..., help="A finished run directory."),
    images: list[str] = typer.Argument(..., help="Image files or folders of images."),
    cam: str | None = typer.Option(None, help="Write Grad-CAM overlays into this folder."),
    tta: int | None = typer.Option(None, help="Test-time augmentation views (default: the run's)."),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """The predicted class and the probability of each class, per image."""
    from cxrlab.evaluate.runs import predict_images

    predictions = predict_images(run_dir, images, tta=tta, device=device)
    if cam:
        from cxrlab.evaluate.cam import write_cam_overlays

        write_cam_overlays(run_dir, [p.path for p in predictions], cam, device=device)
    if as_json:
        _print_json([p.__dict__ for p in predictions])
        return
    for p in predictions:
        probs = "  ".join(f"{k} {v:.4f}" for k, v in p.probabilities.items())
        typer.echo(f"{p.path}\t{p.predicted}\t{probs}")


@app.command()
def sweep(
    study_file: str = typer.Argument(..., help="A study YAML file."),
    data: str | None = typer.Option(None, help="Override the study's data source."),
    storage: str | None = typer.Option(None, help="Optuna storage URL (default: SQLite in the study directory)."),
    workers: int = typer.Option(1, help="Local worker processes."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE override for every run (repeatable)."),
    table: bool = typer.Option(False, "--table", help="Print the results table when done."),
) -> None:
    """Run every run of a study (Optuna grid or TPE), resumable, shareable across workers."""
    from cxrlab.study.sweep import run_sweep

    study_dir = run_sweep(study_file, data=data, storage=storage, workers=workers, overrides=set_)
    if table:
        typer.echo((study_dir / "results.md").read_text(encoding="utf-8"))
    typer.echo(str(study_dir))


@app.command()
def compare(
    run_dirs: list[str] = typer.Argument(..., help="Finished run directories."),
    out_dir: str | None = typer.Option(None, "--out", help="Folder for the table and figures."),
) -> None:
    """Compare runs: accuracy and AUC with 95% intervals, McNemar tests, curves."""
    from cxrlab.report.compare import compare_runs, comparison_markdown

    typer.echo(comparison_markdown(compare_runs(run_dirs, out_dir=out_dir)))


@app.command()
def report(study_dir: str = typer.Argument(..., help="A study directory.")) -> None:
    """Write report.md and report.html for a study (tasks A to E)."""
    from cxrlab.report.render import write_report

    for path in write_report(study_dir):
        typer.echo(str(path))


@app.command()
def study(
    study_file: str | None = typer.Argument(None, help="A study YAML file (default: the shipped study)."),
    data: str | None = typer.Option(None, help="Override the study's data source."),
    workers: int = typer.Option(1, help="Local worker processes."),
    set_: list[str] = typer.Option([], "--set", help="KEY=VALUE override for every run (repeatable)."),
) -> None:
    """The main job: sweep a study, then write its report."""
    from cxrlab.study.main import run_study

    for path in run_study(study_file, data=data, workers=workers, overrides=set_):
        typer.echo(str(path))


@app.command()
def export(
    run_dir: str = typer.Argument(..., help="A finished run directory."),
    format: str = typer.Option("onnx", help="onnx or torchscript."),
    out_dir: str | None = typer.Option(None, "--out", help="Folder to write to (default: the run directory)."),
) -> None:
    """Export a run's model with a sidecar JSON that documents its preprocessing."""
    from cxrlab.train.export import export_run

    for path in export_run(run_dir, format, out_dir=out_dir):
        typer.echo(str(path))


def main() -> None:
    try:
        app()
    except CxrlabError as exc:
        # Escaped: file names such as "[scan].jpeg" must print as they are, not as markup.
        Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
