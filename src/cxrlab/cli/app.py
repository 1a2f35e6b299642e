"""The typer application the command modules register on, and what they share."""

from __future__ import annotations

import json

import typer
from rich.console import Console

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


def print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))
