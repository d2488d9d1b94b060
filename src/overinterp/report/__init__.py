"""The overinterpretation report of a run folder: ``overinterp report RUN_DIR``.

:func:`build_report` finds the run's backward-selection jobs and results file and
writes one self-contained HTML file, a Markdown summary, the figures (PNG, SVG)
and the tables (CSV). See :mod:`.build`. An audit folder (``overinterp audit``) gets its own,
verdict-first report: :func:`build_audit_report` (:mod:`.audit`).
"""

from overinterp.report.audit import build_audit_report
from overinterp.report.build import ReportOptions, build_report
from overinterp.report.discover import JobEntry, RunInputs, discover
from overinterp.report.model import Figure, Report, Section, Table
from overinterp.report.render import render_html, render_markdown


def demo_report(run_dir, threshold: float):
    """The report of a demo run folder (``run_dir/report/``); returns the HTML path."""
    from pathlib import Path

    out = Path(run_dir)
    rep = build_report(
        out, out / "report", ReportOptions(threshold=threshold, title="overinterp demo: report"), log=lambda msg: None
    )
    return rep.html_path


__all__ = [
    "ReportOptions",
    "build_report",
    "JobEntry",
    "RunInputs",
    "discover",
    "Figure",
    "Report",
    "Section",
    "Table",
    "render_html",
    "render_markdown",
    "demo_report",
    "build_audit_report",
]
