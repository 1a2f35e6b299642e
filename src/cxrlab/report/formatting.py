"""How numbers read in the report's tables and sentences: estimates with intervals, differences in
points, p-values, ratios, Markdown cells. Plain values (settings, percentages, durations) read
as ``cxrlab.core.text`` writes them."""

from __future__ import annotations

import math
from typing import Protocol

from cxrlab.core.text import missing, percent


class Interval(Protocol):
    """An estimate with its interval (``analysis.Estimate``, a frozen model: read, never set)."""

    @property
    def estimate(self) -> float: ...
    @property
    def low(self) -> float: ...
    @property
    def high(self) -> float: ...


def percent_ci(interval: Interval | None, digits: int = 1) -> str:
    """``86.5% (83.6–89.1)``: an estimate with its 95% interval, in percent."""
    if interval is None or missing(interval.estimate):
        return "–"
    if missing(interval.low):
        return percent(interval.estimate, digits)
    return f"{100 * interval.estimate:.{digits}f}% ({100 * interval.low:.{digits}f}–{100 * interval.high:.{digits}f})"


def number_ci(interval: Interval | None, digits: int = 3) -> str:
    """``0.912 (0.884–0.937)``."""
    if interval is None or missing(interval.estimate):
        return "–"
    if missing(interval.low):
        return f"{interval.estimate:.{digits}f}"
    return f"{interval.estimate:.{digits}f} ({interval.low:.{digits}f}–{interval.high:.{digits}f})"


def signed_ci(interval: Interval | None, digits: int = 3) -> str:
    """``-0.012 (95% CI -0.030 to +0.004)``: a difference of plain numbers."""
    if interval is None or missing(interval.estimate):
        return "–"

    def signed(value: float) -> str:
        return f"{round(value, digits) + 0.0:+.{digits}f}"  # never "-0.000"

    if missing(interval.low):
        return signed(interval.estimate)
    return f"{signed(interval.estimate)} (95% CI {signed(interval.low)} to {signed(interval.high)})"


def _signed(value: float, digits: int) -> str:
    """``+3.2`` or ``-0.4``; never ``-0.0`` from a bound that is zero up to rounding."""
    rounded = round(100 * value, digits) + 0.0
    return f"{rounded:+.{digits}f}"


def points(value: float | None, digits: int = 1) -> str:
    """A difference of proportions in percentage points, signed."""
    return "–" if value is None or math.isnan(value) else f"{_signed(value, digits)} points"


def points_ci(interval: Interval | None, digits: int = 1) -> str:
    """``+3.2 points (95% CI −0.4 to +6.9)``."""
    if interval is None or missing(interval.estimate):
        return "–"
    text = points(interval.estimate, digits)
    if missing(interval.low):
        return text
    return f"{text} (95% CI {_signed(interval.low, digits)} to {_signed(interval.high, digits)})"


def p_value(p: float | None) -> str:
    if p is None or math.isnan(p):
        return "–"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def p_statement(p: float | None) -> str:
    """``p = 0.003`` or ``p < 0.001``, for a sentence."""
    text = p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def decimal(value: float | None, digits: int = 4) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def ratio(a: float | None, b: float | None) -> str:
    """``12.3×``: how many times ``a`` is ``b``."""
    if a is None or b is None or math.isnan(a) or math.isnan(b) or not b:
        return "–"
    value = a / b
    if value < 0.1:  # "0.0×" would say nothing: two significant digits
        return f"{value:.2g}×"
    return f"{value:.1f}×" if value < 100 else f"{value:.0f}×"


def markdown_cell(value) -> str:
    """A table cell: pipes escaped, one line, and no raw HTML (a Markdown viewer would run it)."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown_table(columns: list[str], rows: list[list], align: list[str] | None = None) -> str:
    """A Markdown pipe table; ``align`` gives each column's ``---`` or ``---:``."""
    rule = align or ["---"] * len(columns)
    lines = ["| " + " | ".join(markdown_cell(c) for c in columns) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(markdown_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
