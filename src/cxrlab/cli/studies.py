"""``cxrlab sweep``, ``study``, ``studies``, ``compare`` and ``report``: many runs, side by side."""

from __future__ import annotations

from typing import Annotated

import typer

from cxrlab.cli.app import app, examples, print_json

studies_app = typer.Typer(help="The shipped studies: list them, or copy one to edit.", invoke_without_command=True)
app.add_typer(studies_app, name="studies")

STUDY_HELP = "A study YAML file, or a shipped study's name (offline, pneumonia, recipe; see cxrlab studies)."
# The options sweep and study share, declared once.
DataOption = Annotated[str | None, typer.Option(help="Override the study's data source.")]
StorageOption = Annotated[
    str | None,
    typer.Option(
        help="Optuna storage URL, e.g. postgresql://user:password@host:5432/db (default: SQLite in the study directory)."
    ),
]
WorkersOption = Annotated[int, typer.Option(help="Local worker processes.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="KEY=VALUE override for every run (repeatable).", show_default=False)
]
ExternalOption = Annotated[
    list[str] | None,
    typer.Option(
        "--external",
        help="NAME=PATH: an external labelled set scored by every run (replaces the study's; NAME= drops one).",
        show_default=False,
    ),
]
NameOption = Annotated[str | None, typer.Option("--name", help="The study directory's name (default: the study's).")]
OutOption = Annotated[str | None, typer.Option("--out", help="Folder the study directory goes in (default: runs).")]
TableOption = Annotated[bool, typer.Option("--table", help="Print the results table when done.")]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print the runs (after --set) and an estimate of time, and exit.")
]


@app.command(
    epilog=examples(
        "cxrlab sweep offline --dry-run",
        "cxrlab sweep offline --set epochs=1 --name offline-quick --workers 2",
        "cxrlab sweep my-study.yaml --data DATA --storage postgresql://cx:PASSWORD@db-host:5432/cxdb",
    )
)
def sweep(
    study_file: str = typer.Argument(..., help=STUDY_HELP),
    data: DataOption = None,
    storage: StorageOption = None,
    workers: WorkersOption = 1,
    set_: SetOption = None,
    external: ExternalOption = None,
    name: NameOption = None,
    out: OutOption = None,
    table: TableOption = False,
    dry_run: DryRunOption = False,
    as_json: bool = typer.Option(False, "--json", help="Print the study directory and its headline numbers as JSON."),
) -> None:
    """Run every run of a study (table, grids, TPE searches), resumable, shareable across workers."""
    from cxrlab.study.main import study_summary
    from cxrlab.study.sweep import run_sweep

    if dry_run:
        _dry_run(study_file, data, set_ or [], name, out, external or [], as_json)
        return
    study_dir = run_sweep(
        study_file,
        data=data,
        storage=storage,
        workers=workers,
        overrides=set_ or [],
        name=name,
        out=out,
        external=external or [],
        show_progress=not as_json,
    )
    if as_json:
        print_json(study_summary(study_dir))
        return
    if table:
        typer.echo((study_dir / "results.md").read_text(encoding="utf-8"))
    typer.echo(str(study_dir))


@app.command(
    epilog=examples(
        "cxrlab study offline --data ../shared/data/kermany-224",
        "cxrlab study offline --set epochs=1 --name offline-quick --dry-run",
        "cxrlab study recipe --json > recipe.json",
    )
)
def study(
    study_file: str | None = typer.Argument(None, help=STUDY_HELP + " Default: offline."),
    data: DataOption = None,
    storage: StorageOption = None,
    workers: WorkersOption = 1,
    set_: SetOption = None,
    external: ExternalOption = None,
    name: NameOption = None,
    out: OutOption = None,
    table: TableOption = False,
    dry_run: DryRunOption = False,
    as_json: bool = typer.Option(
        False, "--json", help="Print the study directory, its headline numbers and the report as JSON."
    ),
) -> None:
    """The main job: sweep a study, then write its report (report.md, report.html)."""
    from cxrlab.study.main import run_study, study_summary

    if dry_run:
        _dry_run(study_file, data, set_ or [], name, out, external or [], as_json)
        return
    paths = run_study(
        study_file,
        data=data,
        storage=storage,
        workers=workers,
        overrides=set_ or [],
        name=name,
        out=out,
        external=external or [],
        show_progress=not as_json,
    )
    study_dir = paths[0].parent
    if as_json:
        print_json(study_summary(study_dir, paths))
        return
    if table:
        typer.echo((study_dir / "results.md").read_text(encoding="utf-8"))
    for path in paths:
        typer.echo(str(path))


@studies_app.callback(epilog=examples("cxrlab studies", "cxrlab studies copy offline my-study.yaml"))
def studies(
    context: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List the shipped studies: name, description, runs and estimated time."""
    if context.invoked_subcommand is not None:
        return
    from cxrlab.study.estimate import duration
    from cxrlab.study.preview import shipped_summaries

    found = shipped_summaries()
    if as_json:
        print_json(found)
        return
    for entry in found:
        typer.echo(f"{entry['name']}: {entry['runs']} runs, about {duration(entry['seconds'])} on one worker")
        typer.echo(f"    {entry['description'] or ''}")
        typer.echo(f"    data {entry['data']}; estimate from {entry['estimate_source']}")
    typer.echo("Run one with: cxrlab study NAME [--data DATA]; edit a copy with: cxrlab studies copy NAME")


@studies_app.command("copy")
def studies_copy(
    name: str = typer.Argument(..., help="A shipped study's name (see cxrlab studies)."),
    destination: str | None = typer.Argument(None, help="File or folder to write (default: ./NAME.yaml)."),
) -> None:
    """Write an editable copy of a shipped study."""
    from cxrlab.study.catalog import copy_study

    typer.echo(str(copy_study(name, destination)))


def _dry_run(study_file, data, overrides, name, out, external, as_json: bool) -> None:
    from cxrlab.study.preview import preview, preview_text

    summary = preview(study_file, data=data, overrides=overrides, name=name, out=out, external=external)
    if as_json:
        print_json(summary)
    else:
        typer.echo(preview_text(summary))


@app.command()
def compare(
    run_dirs: list[str] = typer.Argument(..., help="Finished run directories."),
    out_dir: str | None = typer.Option(None, "--out", help="Folder for the table and figures."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the comparison as JSON (each run's path and metrics with intervals)."
    ),
) -> None:
    """Compare runs: accuracy and AUC with 95% intervals, McNemar tests, curves."""
    from cxrlab.report.compare import compare_runs, comparison_markdown

    result = compare_runs(run_dirs, out_dir=out_dir)
    if as_json:
        from cxrlab.cli.app import print_json

        print_json(result)
        return
    typer.echo(comparison_markdown(result))


@app.command()
def report(study_dir: str = typer.Argument(..., help="A study directory.")) -> None:
    """Write report.md and report.html for a study (tasks A to E, and what transferred)."""
    from cxrlab.report.render import write_report

    for path in write_report(study_dir):
        typer.echo(str(path))
