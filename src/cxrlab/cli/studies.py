"""``cxrlab sweep``, ``study``, ``compare`` and ``report``: many runs, side by side."""

from __future__ import annotations

import typer

from cxrlab.cli.app import app


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
