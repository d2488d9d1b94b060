"""The overinterpretation report of a run folder: ``overinterp report RUN_DIR``.

:func:`build_report` finds the run's backward-selection jobs and results file and
writes one self-contained HTML file, a Markdown summary, the figures (PNG, SVG)
and the tables (CSV). See :mod:`.build`.
"""

from overinterp.report.build import ReportOptions, build_report
from overinterp.report.discover import JobEntry, RunInputs, discover
from overinterp.report.model import Figure, Report, Section, Table
from overinterp.report.render import render_html, render_markdown

__all__ = ["ReportOptions", "build_report", "JobEntry", "RunInputs", "discover", "Figure", "Report", "Section",
           "Table", "render_html", "render_markdown"]
