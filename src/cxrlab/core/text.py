"""How values read as text, written once: settings, numbers, durations, file-name slugs and
one-line error messages.

The report, the results table, run ids and error messages all format through here, so a
learning rate reads ``1e-4`` and a duration ``12.3 s`` wherever it appears.
"""

from __future__ import annotations

import math
from typing import Any

# Characters a file-name slug keeps as they are; every other character becomes "-".
_SLUG_KEEPS = "-_."


def missing(value: Any) -> bool:
    """None or NaN: a number that was not measured."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_value(value: Any) -> str:
    """A setting's value as it reads in a run id or a table: ``1e-4``, ``0.3``, ``32``, ``adam``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) < 1e-2 or abs(value) >= 1e5:
            mantissa, exponent = f"{value:.3e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:.4g}"
    return str(value)


def percent(value: float | None, digits: int = 1) -> str:
    """``86.5%``; a dash when the value is missing."""
    return "–" if value is None or math.isnan(value) else f"{100 * value:.{digits}f}%"


def seconds(value: float | None) -> str:
    """A duration: ``8.2 s``, ``312 s``, ``27.5 min``; a dash when it was not recorded."""
    if value is None or math.isnan(value):
        return "–"
    if value >= 600:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def slug(text: str, limit: int = 80) -> str:
    """``text`` as a safe part of a file name: letters, digits and ``-_.`` kept, the rest ``-``."""
    return "".join(c if c.isalnum() or c in _SLUG_KEEPS else "-" for c in str(text))[:limit]


def first_line(error: BaseException | str, limit: int = 200) -> str:
    """The first line of an error's message (its type's name when it has none), for a one-line
    error that names the cause without a traceback."""
    lines = str(error).strip().splitlines()
    if lines:
        return lines[0][:limit]
    return type(error).__name__ if isinstance(error, BaseException) else ""
