"""``cxrlab similarity`` and ``cxrlab filters``: what transferred, layer by layer."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from cxrlab.cli.app import app, out, print_json
from cxrlab.core.errors import CxrlabError

NETWORK_HELP = "A run directory, or MODEL@WEIGHTS for a network before training (e.g. efficientnet_lite0@imagenet)."


@app.command()
def similarity(
    reference: str = typer.Argument(..., help=NETWORK_HELP),
    others: list[str] = typer.Argument(..., help="One or more networks to compare with the first, stage by stage."),
    data: str = typer.Option(..., help="The data the probe images come from."),
    probes: int = typer.Option(500, min=4, help="Probe images (a fixed draw from the split)."),
    split: str = typer.Option("val", help="Split the probes come from: val, test, train or all."),
    image_size: int | None = typer.Option(
        None, help="Default: the image size of the first run named (reference or not), else 224."
    ),
    batch_size: int = typer.Option(32, min=4, help="Images per mini-batch (memory holds one)."),
    estimator: str = typer.Option("unbiased", help="unbiased (mini-batch CKA) or biased (Kornblith's, one batch)."),
    out_dir: str = typer.Option("similarity", "--out", help="Folder for similarity.json and similarity.png."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON only."),
) -> None:
    """Linear CKA per stage between networks' activations on a fixed probe set, and its figure."""
    from cxrlab.core.io import write_json
    from cxrlab.evaluate.layer_figures import save_png, similarity_figure
    from cxrlab.evaluate.similarity import ESTIMATORS, layer_similarity, load_network, probe_dataset, probe_indices

    if estimator not in ESTIMATORS:
        raise CxrlabError(f"unknown --estimator {estimator!r}: use unbiased or biased")
    if split not in ("train", "val", "test", "all"):
        raise CxrlabError(f"unknown --split {split!r}: use val, test, train or all")
    first = load_network(reference)
    compared = [load_network(spec) for spec in others]
    # A network before training (MODEL@WEIGHTS) has no image size or split of its own: the
    # first run named gives both, so that the runs are probed as they were trained.
    splitter = next((n for n in [first, *compared] if n.run is not None), first)
    size = image_size or (splitter.run.config.image_size if splitter.run is not None else 224)
    dataset = probe_dataset(data, size, splitter, show_progress=not as_json)
    chosen = probe_indices(dataset, split, probes)
    if estimator == "biased" and len(chosen) > batch_size:
        batch_size = len(chosen)  # the biased estimator is only CKA over one batch
    results = layer_similarity(
        first, compared, dataset, chosen, split=split, batch_size=batch_size, estimator=estimator
    )
    folder = Path(out_dir)
    write_json(folder / "similarity.json", {"comparisons": [r.as_json() for r in results]})
    figure_path = save_png(similarity_figure(results), folder / "similarity.png")
    if as_json:
        print_json([r.as_json() for r in results])
        return
    table = Table(title=f"linear CKA with {escape(first.label)} ({len(chosen)} {split} images, {size} px)")
    table.add_column("stage")
    for result in results:
        table.add_column(escape(result.other), justify="right")
    for i, layer in enumerate(results[0].layers):
        table.add_row(layer, *[f"{r.cka[i]:.3f}" for r in results])
    out.print(table)
    out.print(f"computed in {results[0].seconds:.1f} s; wrote {folder / 'similarity.json'} and {figure_path}")


@app.command()
def filters(
    networks: list[str] = typer.Argument(..., help=NETWORK_HELP),
    out_file: str = typer.Option("filters.png", "--out", help="The PNG to write."),
) -> None:
    """The first convolution's filters of several networks side by side, as one image."""
    from cxrlab.evaluate.layer_figures import filters_figure, save_png
    from cxrlab.evaluate.similarity import first_convolution, load_network

    loaded = [load_network(spec) for spec in networks]
    path = save_png(filters_figure([(n.label, first_convolution(n).weight) for n in loaded]), out_file)
    out.print(f"wrote {path}")
