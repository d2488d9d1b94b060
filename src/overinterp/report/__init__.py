"""The overinterpretation report of a run folder: ``overinterp report RUN_DIR``.

:func:`build_report` finds the run's backward-selection jobs and results file and
writes one self-contained HTML file, a Markdown summary, the figures (PNG, SVG)
and the tables (CSV). See :mod:`.build`.
"""

from .build import ReportOptions, build_report
from .discover import JobEntry, RunInputs, discover
from .model import Figure, Report, Section, Table
from .render import render_html, render_markdown

__all__ = ["ReportOptions", "build_report", "JobEntry", "RunInputs", "discover", "Figure", "Report", "Section",
           "Table", "render_html", "render_markdown"]
