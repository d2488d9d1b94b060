"""MkDocs hooks: the command-line reference, generated from the argparse parsers at build time,
and Sphinx roles in rendered docstrings shown as code.

A page holding the marker ``<!-- cli-reference -->`` gets one section per command (sub-commands
included): its description, usage, positional arguments and options with their help, defaults and
choices, exactly as ``overinterp COMMAND --help`` knows them, so the page cannot drift from the code.
"""

from __future__ import annotations

import argparse
import html
import re

MARKER = "<!-- cli-reference -->"


def _subparsers(ap: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def iter_commands(ap: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """``(command words, parser, one-line help)`` for every command and sub-command, depth first."""
    sub = _subparsers(ap)
    if sub is None:
        return
    helps = {a.dest: a.help for a in sub._choices_actions}
    for name, parser in sub.choices.items():
        words = (*prefix, name)
        yield words, parser, helps.get(name) or ""
        yield from iter_commands(parser, words)


def _cell(text: object) -> str:
    s = " ".join(str(text).split())
    # "|" would end the table cell; "[x][y]" would be read as a Markdown reference link
    return html.escape(s, quote=False).replace("|", "\\|").replace("[", "\\[")


def _default(action: argparse.Action) -> str:
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)):
        return ""
    d = action.default
    if d is None or d is argparse.SUPPRESS or d == []:
        return ""
    return f"`{d}`"


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(" in text:
        params = {k: v for k, v in vars(action).items() if v is not argparse.SUPPRESS}
        params["prog"] = ""
        if action.choices is not None:
            params["choices"] = ", ".join(map(str, action.choices))
        try:
            text = text % params
        except (KeyError, TypeError, ValueError):
            pass
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        text += " (choices: " + ", ".join(f"`{c}`" for c in action.choices) + ")"
    return _cell(text).replace("\\`", "`")


def command_markdown(words: tuple[str, ...], parser: argparse.ArgumentParser, summary: str) -> str:
    """One command's section: heading, summary, description, usage and argument tables."""
    name = "overinterp " + " ".join(words)
    anchor = "-".join(words)
    out = [f"## `{name}` {{#{anchor}}}", ""]
    if summary:
        out += [_cell(summary)[:1].upper() + _cell(summary)[1:] + ".", ""]
    if parser.description and parser.description.strip() != summary.strip():
        out += [" ".join(parser.description.split()), ""]
    usage = parser.format_usage().strip().removeprefix("usage: ")
    out += ["```text", usage, "```", ""]
    positionals = [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]
    options = [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
    sub = _subparsers(parser)
    if sub is not None:
        out += ["| sub-command | what it does |", "|---|---|"]
        helps = {a.dest: a.help for a in sub._choices_actions}
        for child in sub.choices:
            out.append(f"| [`{child}`](#{anchor}-{child}) | {_cell(helps.get(child) or '')} |")
        out.append("")
    if positionals:
        out += ["| argument | meaning |", "|---|---|"]
        for a in positionals:
            out.append(f"| `{a.metavar or a.dest}` | {_help(a)} |")
        out.append("")
    if options:
        out += ["| option | meaning | default |", "|---|---|---|"]
        for a in options:
            flags = ", ".join(
                f"`{f}`" + (f" `{a.metavar or a.dest.upper()}`" if a.nargs != 0 else "") for f in a.option_strings
            )
            out.append(f"| {flags} | {_help(a)} | {_default(a)} |")
        out.append("")
    return "\n".join(out)


def cli_markdown() -> str:
    """Every command of ``overinterp``, in the order ``overinterp --help`` lists them."""
    from overinterp.cli import build_parser

    ap = build_parser()
    parts = []
    for words, parser, summary in iter_commands(ap):
        parts.append(command_markdown(words, parser, summary))
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ANN001 (MkDocs hook signature)
    if MARKER in markdown:
        markdown = markdown.replace(MARKER, cli_markdown())
    return markdown


#: a Sphinx role left in a rendered docstring: ":class:<code>~pkg.Name</code>"
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):\s*<code>(~?)([\w.]+)</code>")


def on_page_content(html_text: str, page, config, files) -> str:  # noqa: ANN001 (MkDocs hook signature)
    """The docstrings use Sphinx roles (``:func:`~overinterp.x```); show them as code, with ``~``
    meaning the last component only, as Sphinx does."""
    return _ROLE.sub(lambda m: f"<code>{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}</code>", html_text)
