"""Render a :class:`~overinterp.report.model.Report` as one self-contained HTML file
(figures embedded as base64 PNG, inline CSS, no scripts, nothing fetched) and as Markdown."""

from __future__ import annotations

import base64
import html
import os
import re
from pathlib import Path

from overinterp.report.model import Report, Section, Table

__all__ = ["render_html", "render_markdown", "markdown_table_to_html", "inline_markup"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1b1b1b;
       max-width: 1100px; margin: 2em auto; padding: 0 1.2em; line-height: 1.45; background: #fff; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; border-bottom: 2px solid #444; padding-bottom: 0.15em; margin-top: 2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
.meta { color: #555; font-size: 0.9em; }
nav ol { columns: 2; font-size: 0.95em; }
code { background: #f1f1f1; padding: 0.05em 0.3em; border-radius: 3px; font-size: 0.9em; word-break: break-word; }
.note { border-left: 4px solid #777; background: #f6f6f6; padding: 0.5em 0.8em; margin: 0.7em 0; }
.note::before { content: "Missing input — "; font-weight: 600; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #ddd; image-rendering: auto; }
figcaption { font-size: 0.9em; color: #333; margin-top: 0.3em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.88em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.55em; }
th { background: #e9e9e9; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.tablewrap { overflow-x: auto; }
.files { font-size: 0.8em; color: #666; }
"""


def inline_markup(text: str) -> str:
    """HTML-escape ``text`` and turn ```code``` spans and ``**bold**`` into tags."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for p in parts:
        if len(p) >= 2 and p.startswith("`") and p.endswith("`"):
            out.append(f"<code>{html.escape(p[1:-1])}</code>")
        else:
            e = html.escape(p)
            out.append(re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", e))
    return "".join(out)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_table_to_html(markdown: str) -> str:
    """A pipe table (header, alignment row, rows; then caption lines) → HTML.
    Columns aligned right (``---:``) get the ``num`` class."""
    lines = [ln for ln in markdown.strip().splitlines()]
    rows = [ln for ln in lines if ln.lstrip().startswith("|")]
    rest = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("|")]
    if len(rows) < 2:
        return "".join(f"<p>{inline_markup(ln)}</p>" for ln in lines if ln.strip())
    header, align, body = _cells(rows[0]), _cells(rows[1]), [_cells(r) for r in rows[2:]]
    right = [a.endswith(":") for a in align]
    out = ['<div class="tablewrap"><table><thead><tr>']
    out += [f"<th>{inline_markup(h)}</th>" for h in header]
    out.append("</tr></thead><tbody>")
    for r in body:
        out.append(
            "<tr>"
            + "".join(
                f'<td class="num">{inline_markup(c)}</td>'
                if k < len(right) and right[k]
                else f"<td>{inline_markup(c)}</td>"
                for k, c in enumerate(r)
            )
            + "</tr>"
        )
    out.append("</tbody></table></div>")
    out += [f'<p class="meta">{inline_markup(ln)}</p>' for ln in rest]
    return "".join(out)


def _rel(path: Path | None, base: Path) -> str:
    if path is None:
        return ""
    try:
        return os.path.relpath(path, base)
    except ValueError:
        return str(path)


def _table_html(t: Table, base: Path) -> str:
    files = f'<p class="files">CSV: {html.escape(_rel(t.csv, base))}</p>' if t.csv else ""
    return f"<h3>{inline_markup(t.title)}</h3>{markdown_table_to_html(t.markdown)}{files}"


def _section_html(s: Section, base: Path) -> str:
    out = [f'<section id="{html.escape(s.key)}"><h2>{inline_markup(s.title)}</h2>']
    out += [f"<p>{inline_markup(p)}</p>" for p in s.text]
    out += [f'<p class="note">{inline_markup(n)}</p>' for n in s.notes]
    for t in s.tables:
        out.append(_table_html(t, base))
    for f in s.figures:
        data = base64.b64encode(f.png.read_bytes()).decode("ascii")
        files = ", ".join(html.escape(_rel(p, base)) for p in (f.png, f.svg) if p is not None)
        out.append(
            f'<figure id="fig-{html.escape(f.key)}"><img src="data:image/png;base64,{data}" '
            f'alt="{html.escape(f.title)}"><figcaption><strong>{inline_markup(f.title)}.</strong> '
            f'{inline_markup(f.caption)} <span class="files">({files})</span></figcaption></figure>'
        )
    out.append("</section>")
    return "".join(out)


def render_html(report: Report) -> str:
    """The report as one HTML document that needs nothing else to display."""
    base = report.out_dir
    toc = "".join(f'<li><a href="#{html.escape(s.key)}">{inline_markup(s.title)}</a></li>' for s in report.sections)
    body = "".join(_section_html(s, base) for s in report.sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(report.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(report.title)}</h1>"
        f'<p class="meta">Run folder <code>{html.escape(str(report.run_dir))}</code> · generated '
        f"{html.escape(report.generated)} by overinterp</p>"
        f"<nav><ol>{toc}</ol></nav>{body}</body></html>\n"
    )


def render_markdown(report: Report) -> str:
    """The report as Markdown, figures linked as relative PNG paths."""
    base = report.out_dir
    out = [f"# {report.title}", "", f"Run folder `{report.run_dir}` · generated {report.generated} by overinterp", ""]
    for s in report.sections:
        out += [f"## {s.title}", ""]
        for p in s.text:
            out += [p, ""]
        for n in s.notes:
            out += [f"> **Missing input —** {n}", ""]
        for t in s.tables:
            out += [f"### {t.title}", "", t.markdown.strip(), ""]
            if t.csv:
                out += [f"CSV: `{_rel(t.csv, base)}`", ""]
        for f in s.figures:
            out += [
                f"![{f.title}]({_rel(f.png, base)})",
                "",
                f"**{f.title}.** {f.caption}" + (f" (SVG: `{_rel(f.svg, base)}`)" if f.svg else ""),
                "",
            ]
    return "\n".join(out).rstrip() + "\n"
