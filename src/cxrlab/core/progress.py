"""Rich progress bars for long work, silent when asked or when output is not a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


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
        task = progress.add_task(description, total=total, **initial)
        yield lambda n=1, **values: progress.update(task, advance=n, **values)
