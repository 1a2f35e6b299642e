"""``cxrlab data inspect``, ``data show`` and ``models``: what the data and the models are."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cxrlab.cli.app import app, data_app, examples, new_file, out, print_json

SIZE_MIN, SIZE_MAX = 16, 4096  # TrainConfig.image_size's bounds (tests/test_cli_options.py checks)


@data_app.command(
    "inspect", epilog=examples("cxrlab data inspect ../shared/data/kermany-224", "cxrlab data inspect data.npz --json")
)
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
        print_json(summary)
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


@data_app.command(
    "show",
    epilog=examples(
        "cxrlab data show ../shared/data/kermany-224 --out grid.png",
        "cxrlab data show DATA --out augmented.png --augment strong --per-class 6",
    ),
)
def data_show(
    path: str = typer.Argument(..., help="Dataset root, folder of class folders, .npz file or pneumoniamnist[:SIZE]."),
    out_file: str = typer.Option(..., "--out", help="The PNG file to write."),
    per_class: int = typer.Option(4, min=1, max=16, help="Images per class and split."),
    augment: Literal["none", "light", "strong"] = typer.Option(
        "none", help="Show the images as training augments them."
    ),
    image_size: int = typer.Option(
        224, min=SIZE_MIN, max=SIZE_MAX, help="Images are decoded and resized to this many pixels a side."
    ),
    labels: Literal["folders", "kermany3"] = typer.Option(
        "folders", help="Class labels from the folders, or NORMAL/BACTERIA/VIRUS from Kermany file names."
    ),
    split_seed: int = typer.Option(
        0, min=0, max=2**32 - 1, help="Seed of the patient-grouped split a run would carve."
    ),
    seed: int = typer.Option(0, min=0, max=2**32 - 1, help="Which images are drawn, and their augmentation."),
) -> None:
    """A labelled grid of images per class and split (the splits a run would use), to see
    what the network will see before training it."""
    from cxrlab.api import show_data
    from cxrlab.report.figures import save_png

    new_file("--out", out_file)
    figure = show_data(
        path,
        per_class=per_class,
        augment=augment,
        image_size=image_size,
        labels=labels,
        split_seed=split_seed,
        seed=seed,
    )
    typer.echo(str(save_png(figure, out_file)))


@app.command(
    epilog=examples(
        "cxrlab models",
        "cxrlab models --image-size 128 --measure",
        "cxrlab models --timm 'convnext*'",
    )
)
def models(
    image_size: int = typer.Option(
        224, min=SIZE_MIN, max=SIZE_MAX, help="Image size for the FLOP count and the speed measurement."
    ),
    measure: bool = typer.Option(False, help="Measure inference images/s on this machine (slower)."),
    timm_pattern: str | None = typer.Option(
        None, "--timm", metavar="PATTERN", help="List timm's models matching PATTERN (use them as timm:<name>)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """The model registry with size, cost, ImageNet accuracy and availability (task A)."""
    if timm_pattern is not None:
        return timm_models(timm_pattern, as_json)
    from cxrlab.models.cards import model_cards

    cards = model_cards(image_size=image_size, measure=measure)
    if as_json:
        print_json(cards)
        return
    table = models_table(cards, image_size)
    # Piped or redirected output has no width to fit: write whole lines.
    console = out if out.is_terminal else Console(width=200)
    console.print(table)


def models_table(cards: list[dict], image_size: int) -> Table:
    """The registry as a rich table whose model names are never cut."""
    table = Table(title=f"cxrlab models at {image_size} px (2-class head)")
    for column in ("model", "params", "trainable frozen", "GFLOPs", "ImageNet top-1", "weights", "images/s"):
        table.add_column(column, justify="left" if column in ("model", "weights") else "right")
    # Names are never cut: the model column keeps its width and the others wrap around it.
    table.columns[0].no_wrap = True
    table.columns[0].min_width = max(len(c["model"]) for c in cards)
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
    return table


def timm_models(pattern: str, as_json: bool) -> None:
    """timm's architectures matching ``pattern``, and which have pretrained weights there."""
    import timm

    names = timm.list_models(pattern)
    pretrained = {name.split(".")[0] for name in timm.list_models(pattern, pretrained=True)}
    rows = [{"model": f"timm:{name}", "pretrained": name in pretrained} for name in names]
    if as_json:
        print_json(rows)
        return
    if not rows:
        typer.echo(f"no timm model matches {pattern!r} (patterns use shell wildcards: 'resnet*')")
        return
    for row in rows:
        typer.echo(f"{row['model']}\t{'imagenet weights' if row['pretrained'] else 'no pretrained weights'}")
    typer.echo(f"{len(rows)} timm models match {pattern!r}; train one with --model timm:<name>", err=True)
