"""Rich progress bars for long work, and where cxrlab's messages go.

Library code writes its messages to the ``cxrlab`` logger (``logging.getLogger(__name__)``
in each module); it installs no handler of its own, so a notebook or a caller decides what
is shown (``logging.getLogger("cxrlab").setLevel(logging.WARNING)`` silences the epoch
lines). The command line calls ``log_to_console``, which prints them on stderr through the
same rich console the progress bars draw on, so a message never tears a bar. Bars are drawn
only on a terminal, on stderr.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)
LOGGER = "cxrlab"


class ConsoleHandler(logging.Handler):
    """Log records as plain lines on the rich console (warnings and errors prefixed)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            console.print(message, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def log_to_console(level: int = logging.INFO) -> logging.Handler:
    """Show cxrlab's messages of ``level`` and above on stderr (the command line does this);
    returns the handler, installed once however often this is called."""
    logger = logging.getLogger(LOGGER)
    handler = next((h for h in logger.handlers if isinstance(h, ConsoleHandler)), None)
    if handler is None:
        handler = ConsoleHandler()
        logger.addHandler(handler)
    logger.setLevel(level)
    return handler


@contextlib.contextmanager
def progress_bar(
    description: str, total: int, enabled: bool = True, fields: str | None = None, **initial: float
) -> Iterator[Callable[..., None]]:
    """Yield ``advance(n=1, **fields)``; draws a bar on stderr while the block runs.

    ``fields`` is a format string over ``task.fields`` (e.g. ``"loss {task.fields[loss]:.4f}"``)
    shown after the bar, with ``initial`` values."""
    if not enabled or not console.is_terminal:
        yield lambda n=1, **_: None
        return
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn()]
    if fields:
        columns.append(TextColumn(fields))
    columns += [TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        # Task fields only: typed as add_task's **fields (Any), not as its start/completed/visible.
        initial_fields: dict[str, Any] = initial
        task = progress.add_task(description, total=total, **initial_fields)
        yield lambda n=1, **values: progress.update(task, advance=n, **values)
