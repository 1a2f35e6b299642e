"""``cxrlab train``, ``evaluate``, ``predict`` and ``export``: one run at a time."""

from __future__ import annotations

import typer
from rich.table import Table

from cxrlab.cli.app import app, out, print_json
from cxrlab.core.errors import CxrlabError


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

    from cxrlab.training.config import TrainConfig
    from cxrlab.training.loop import fit
    from cxrlab.training.records import DIVERGED, run_status

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
    adapt: str | None = typer.Option(
        None, help="Adapt first, without labels, on the scored images themselves: bn, prior or bn+prior."
    ),
    adapted: str | None = typer.Option(None, help="Apply an adaptation recorded by cxrlab adapt (its name)."),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON alone."),
) -> None:
    """Score a finished run on labelled data; the metrics go into the run directory too."""
    from cxrlab.evaluate.runs import evaluate_run

    result = evaluate_run(
        run_dir, data, tta=tta, device=device, show_progress=not as_json, adapt=adapt, adapted=adapted
    )
    if as_json:
        print_json(result)
        return
    out.print(
        f"run {result['run']} on {result['data']}: {result['n_test']} test images", highlight=False, soft_wrap=True
    )
    if result["adaptation"]:
        out.print(f"ADAPTED: {adaptation_text(result['adaptation'])}", highlight=False, soft_wrap=True)
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
    adapt: str | None = typer.Option(
        None, help="Adapt first, without labels, on the images given: bn, prior or bn+prior."
    ),
    adapted: str | None = typer.Option(None, help="Apply an adaptation recorded by cxrlab adapt (its name)."),
    device: str = typer.Option("auto"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """The predicted class and the probability of each class, per image."""
    from cxrlab.evaluate.runs import predict_images

    predictions = predict_images(run_dir, images, tta=tta, device=device, adapt=adapt, adapted=adapted)
    if cam:
        from cxrlab.evaluate.cam import write_cam_overlays

        write_cam_overlays(run_dir, [p.path for p in predictions], cam, device=device)
    if as_json:
        print_json([p.__dict__ for p in predictions])
        return
    if predictions[0].adaptation:
        typer.echo(f"ADAPTED: {predictions[0].adaptation}", err=True)
    for p in predictions:
        probs = "  ".join(f"{k} {v:.4f}" for k, v in p.probabilities.items())
        typer.echo(f"{p.path}\t{p.predicted}\t{probs}")


@app.command()
def export(
    run_dir: str = typer.Argument(..., help="A finished run directory."),
    format: str = typer.Option("onnx", help="onnx or torchscript."),
    out_dir: str | None = typer.Option(None, "--out", help="Folder to write to (default: the run directory)."),
    adapted: str | None = typer.Option(None, help="Apply an adaptation recorded by cxrlab adapt (its name)."),
) -> None:
    """Export a run's model with a sidecar JSON that documents its preprocessing."""
    from cxrlab.training.export import export_run

    for path in export_run(run_dir, format, out_dir=out_dir, adapted=adapted):
        typer.echo(str(path))


@app.command()
def adapt(
    run_dir: str = typer.Argument(..., help="A finished run directory."),
    target: str = typer.Option(..., help="A folder of the target site's images (labels, if any, are not used)."),
    method: str = typer.Option("bn+prior", help="bn (AdaBN), prior (EM class prior) or bn+prior."),
    name: str | None = typer.Option(None, help="Name of the variant (default: METHOD-FOLDER)."),
    device: str = typer.Option("auto"),
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
