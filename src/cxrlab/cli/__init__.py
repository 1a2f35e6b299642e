"""The command line: parse, call one function, print. No logic lives here.

One module per group of commands registers on the shared typer app: ``inspect`` (data
inspect, models), ``runs`` (train, evaluate, predict, export), ``similarity`` (similarity,
filters) and ``studies`` (sweep, study, compare, report).
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from cxrlab.cli import inspect, runs, similarity, studies  # noqa: F401 - they register the commands
from cxrlab.cli.app import app
from cxrlab.core.errors import CxrlabError

__all__ = ["app", "main"]


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
