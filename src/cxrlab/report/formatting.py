"""How numbers read in tables and sentences: percentages with intervals, p-values, durations."""

from __future__ import annotations

import math


def missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def percent(value: float | None, digits: int = 1) -> str:
    return "–" if missing(value) else f"{100 * value:.{digits}f}%"


def percent_ci(interval: dict | None, digits: int = 1) -> str:
    """``86.5% (83.6–89.1)``: an estimate with its 95% interval, in percent."""
    if not interval or missing(interval.get("estimate")):
        return "–"
    if missing(interval.get("low")):
        return percent(interval["estimate"], digits)
    return (
        f"{100 * interval['estimate']:.{digits}f}% "
        f"({100 * interval['low']:.{digits}f}–{100 * interval['high']:.{digits}f})"
    )


def number_ci(interval: dict | None, digits: int = 3) -> str:
    """``0.912 (0.884–0.937)``."""
    if not interval or missing(interval.get("estimate")):
        return "–"
    if missing(interval.get("low")):
        return f"{interval['estimate']:.{digits}f}"
    return f"{interval['estimate']:.{digits}f} ({interval['low']:.{digits}f}–{interval['high']:.{digits}f})"


def _signed(value: float, digits: int) -> str:
    """``+3.2`` or ``-0.4``; never ``-0.0`` from a bound that is zero up to rounding."""
    rounded = round(100 * value, digits) + 0.0
    return f"{rounded:+.{digits}f}"


def points(value: float | None, digits: int = 1) -> str:
    """A difference of proportions in percentage points, signed."""
    return "–" if missing(value) else f"{_signed(value, digits)} points"


def points_ci(interval: dict | None, digits: int = 1) -> str:
    """``+3.2 points (95% CI −0.4 to +6.9)``."""
    if not interval or missing(interval.get("estimate")):
        return "–"
    text = points(interval["estimate"], digits)
    if missing(interval.get("low")):
        return text
    return f"{text} (95% CI {_signed(interval['low'], digits)} to {_signed(interval['high'], digits)})"


def p_value(p: float | None) -> str:
    if missing(p):
        return "–"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def p_statement(p: float | None) -> str:
    """``p = 0.003`` or ``p < 0.001``, for a sentence."""
    text = p_value(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def seconds(value: float | None) -> str:
    if missing(value):
        return "–"
    if value >= 600:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def decimal(value: float | None, digits: int = 4) -> str:
    return "–" if missing(value) else f"{value:.{digits}f}"


def signed_percent(value: float | None, digits: int = 1) -> str:
    return "–" if missing(value) else f"{100 * value:+.{digits}f}%"


def ratio(a: float | None, b: float | None) -> str:
    """``12.3×``: how many times ``a`` is ``b``."""
    if missing(a) or missing(b) or not b:
        return "–"
    value = a / b
    if value < 0.1:  # "0.0×" would say nothing: two significant digits
        return f"{value:.2g}×"
    return f"{value:.1f}×" if value < 100 else f"{value:.0f}×"


def markdown_cell(value) -> str:
    """A table cell: pipes escaped, one line, and no raw HTML (a Markdown viewer would run it)."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def markdown_table(columns: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(markdown_cell(c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(markdown_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
