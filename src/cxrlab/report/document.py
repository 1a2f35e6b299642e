"""The report as a document: sections of typed blocks, written out as Markdown and as HTML.

A section is a list of blocks (paragraph, subheading, findings, table, figure). The Markdown
is written from the blocks here; the HTML comes from a jinja2 template with autoescaping on,
the figures embedded as base64 data URIs, so the file stands alone.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cxrlab.report.formatting import markdown_table

FIGURES_FOLDER = "report_files"


@dataclass(frozen=True)
class Paragraph:
    kind: ClassVar[str] = "paragraph"
    text: str


@dataclass(frozen=True)
class Subheading:
    kind: ClassVar[str] = "subheading"
    text: str


@dataclass(frozen=True)
class Findings:
    kind: ClassVar[str] = "findings"
    entries: list[str]


@dataclass(frozen=True)
class Table:
    """A table; ``rows`` are already text, one cell per column."""

    kind: ClassVar[str] = "table"
    caption: str
    columns: list[str]
    rows: list[list[str]]

    def __post_init__(self) -> None:
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.caption!r}: a row of {len(row)} cells under {len(self.columns)} columns")


@dataclass(frozen=True)
class Figure:
    kind: ClassVar[str] = "figure"
    path: Path
    caption: str

    @property
    def file(self) -> str:
        """The figure's link, relative to the report."""
        return f"{FIGURES_FOLDER}/{self.path.name}"


Block = Paragraph | Subheading | Findings | Table | Figure


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    summary: list[str]
    sections: list[Section]


def table(caption: str, columns: list[str], rows: list[list]) -> Table:
    """A table block from cells of any type (shown as text)."""
    return Table(caption, list(columns), [[str(v) for v in row] for row in rows])


def markdown_text(report: Report) -> str:
    lines = [f"# {report.title}", ""] + [f"{line}  " for line in report.summary] + [""]
    lines += ["Contents: " + " · ".join(f"[{s.title}](#{s.id})" for s in report.sections), ""]
    for section in report.sections:
        lines += [f'<a id="{section.id}"></a>', "", f"## {section.title}", ""]
        for block in section.blocks:
            lines += _markdown_block(block) + [""]
    return "\n".join(lines)


def _markdown_block(block: Block) -> list[str]:
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Subheading):
        return [f"### {block.text}"]
    if isinstance(block, Findings):
        return [f"- {item}" for item in block.entries]
    if isinstance(block, Table):
        return [f"**{block.caption}**", "", markdown_table(block.columns, block.rows)]
    return [f"![{block.caption}]({block.file})", "", f"*{block.caption}*"]


def html_text(report: Report) -> str:
    """The report as one HTML file: figures inlined, every text autoescaped."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    sources = {
        block.file: "data:image/png;base64," + base64.b64encode(block.path.read_bytes()).decode("ascii")
        for section in report.sections
        for block in section.blocks
        if isinstance(block, Figure)
    }
    return environment.get_template("report.html.j2").render(report=report, sources=sources)
