"""``cxrlab data inspect`` and ``cxrlab models``: what the data and the models are."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from cxrlab.cli.app import app, data_app, out, print_json


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
    conflicts = summary["duplicates_with_different_labels"]
    if conflicts:
        out.print(
            f"[red]{len(conflicts)} byte-identical images under different labels[/red] (a run stops on them unless "
            "--on-duplicate-label keep): " + "; ".join(escape(c) for c in conflicts[:3])
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
        print_json(cards)
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
