"""The command line: parse, call one function, print. No logic lives here.

One module per group of commands registers on the shared typer app: ``inspect`` (data
inspect, models), ``runs`` (train, evaluate, predict, export) and ``studies`` (sweep,
study, compare, report).
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from cxrlab.cli import inspect, runs, studies  # noqa: F401 - they register the commands
from cxrlab.cli.app import app
from cxrlab.core.errors import CxrlabError
from cxrlab.core.io import is_storage_error, storage_error

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except CxrlabError as exc:
        _error_line(exc)
    except OSError as exc:
        # A full disk or a read-only folder met where no record writer stood guard: the
        # place's fault, not cxrlab's, so one line too.
        if not is_storage_error(exc):
            raise
        _error_line(storage_error(exc.filename or "a file", exc))
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)


def _error_line(exc: CxrlabError) -> None:
    # Escaped: file names such as "[scan].jpeg" must print as they are, not as markup; and
    # ":abc:" in "pneumoniamnist:abc:" is text, not an emoji code.
    console = Console(stderr=True, emoji=False)
    console.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
