"""The typer application the command modules register on, and what they share."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from cxrlab.core.errors import CxrlabError

# -h as well as --help, on every command.
CONTEXT = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    help="Transfer-learning studies for medical image classification: pretrained ConvNets fine-tuned, "
    "used as fixed feature extractors or trained from scratch, compared with intervals and paired tests.",
    epilog="Start with: cxrlab data inspect DATA, cxrlab models, cxrlab train -h. Shell completion: "
    "cxrlab --install-completion.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=CONTEXT,
)
data_app = typer.Typer(help="Look at a data source.", no_args_is_help=True, context_settings=CONTEXT)
app.add_typer(data_app, name="data")
out = Console()


def _version(value: bool) -> None:
    if value:
        from cxrlab import __version__

        typer.echo(f"cxrlab {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Transfer-learning studies for medical image classification."""


def print_json(data) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def examples(*lines: str) -> str:
    """A command's epilog: examples, one a line (click keeps \\b blocks as written)."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)


def new_folder(option: str, path: str | None) -> None:
    """An output folder option: refuse a path that is an existing file, before any work."""
    if path is not None and Path(path).exists() and not Path(path).is_dir():
        raise CxrlabError(f"{option} {path}: a file is there, and this is a folder to write into; choose another path")


def new_file(option: str, path: str, suffixes: tuple[str, ...] = (".png",)) -> None:
    """An output image option: a file name of a known kind whose folder is not a file."""
    target = Path(path)
    if target.is_dir():
        raise CxrlabError(f"{option} {path} is a folder: name the file to write, e.g. {Path(path) / 'grid.png'}")
    if target.suffix.lower() not in suffixes:
        raise CxrlabError(f"{option} {path}: name a {' or '.join(suffixes)} file")
