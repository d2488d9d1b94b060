"""The report as data: sections holding text, notes, figures and tables, rendered by
:mod:`overinterp.report.render` to HTML and Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Figure", "Table", "Section", "Report"]


@dataclass
class Figure:
    """A saved figure: ``png`` (embedded in the HTML) and ``svg`` (beside it)."""

    key: str
    title: str
    caption: str
    png: Path
    svg: Path | None = None


@dataclass
class Table:
    """A table: Markdown text (pipe table, then optional caption lines) and its CSV file."""

    key: str
    title: str
    markdown: str
    csv: Path | None = None


@dataclass
class Section:
    """One part of the report. ``notes`` say what is missing and which command makes it
    (text with ``code`` spans in backticks)."""

    key: str
    title: str
    text: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)


@dataclass
class Report:
    """The whole report and where it was written."""

    title: str
    run_dir: Path
    out_dir: Path
    generated: str
    sections: list[Section] = field(default_factory=list)
    html_path: Path | None = None
    markdown_path: Path | None = None
