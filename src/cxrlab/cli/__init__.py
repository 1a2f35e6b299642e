"""The command line: parse, call one function, print. No logic lives here.

One module per group of commands registers on the shared typer app: ``inspect`` (data
inspect, data show, models), ``runs`` (train, lr-find, evaluate, predict, export),
``similarity`` (similarity, filters) and ``studies`` (sweep, study, compare, report).
``main`` turns every error a user can cause, a mistyped option as much as a missing file,
into one line on stderr and exit code 2.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.markup import escape

from cxrlab.cli import inspect, results, runs, similarity, studies  # noqa: F401 - they register the commands
from cxrlab.cli.app import app
from cxrlab.core.errors import CxrlabError
from cxrlab.core.progress import log_to_console

__all__ = ["app", "main"]


def main() -> None:
    log_to_console()
    try:
        code = app(standalone_mode=False, prog_name="cxrlab")
    except typer.TyperException as exc:
        # click's errors (typer ships its own click): a wrong option, a missing argument.
        if type(exc).__name__ == "NoArgsIsHelpError":
            # The command's help, as asked for by no arguments. typer exports no class that has
            # show() (it lives in the private typer._click), so the error is matched by name.
            exc.show()  # type: ignore[attr-defined]
        else:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see {ctx.command_path} -h)" if ctx is not None else ""
            say_error(f"{exc.format_message()}{hint}")
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        Console(stderr=True).print("aborted")
        sys.exit(1)
    except CxrlabError as exc:
        say_error(str(exc))
        sys.exit(exc.exit_code)
    except OSError as exc:
        # A full disk or a read-only folder met where no record writer stood guard: the
        # place's fault, not cxrlab's, so one line too.
        from cxrlab.core.io import is_storage_error, storage_error

        if not is_storage_error(exc):
            raise
        error = storage_error(exc.filename or "a file", exc)
        say_error(str(error))
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        sys.exit(130)
    if isinstance(code, int) and code:
        sys.exit(code)


def say_error(message: str) -> None:
    # One line, escaped: file names such as "[scan].jpeg" must print as they are, not as markup,
    # and ":abc:" in "pneumoniamnist:abc:" is text, not an emoji code.
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    Console(stderr=True, emoji=False).print(
        f"[bold red]error:[/bold red] {escape(line)}", highlight=False, soft_wrap=True
    )


if __name__ == "__main__":
    main()
