"""The command line: builds the top parser from one module per command group and dispatches.

Each group module exposes ``add_parsers(subparsers)``; every sub-command registers
its handler with ``set_defaults(func=…)``; shared options live in
:mod:`overinterp.cli._common`. Only user errors (:data:`overinterp.errors.USER_ERRORS`)
and a full disk become a one-line message and exit code 2; anything else is a bug and
keeps its traceback. The library names its own arguments in errors
(:class:`~overinterp.errors.UserInputError`'s ``argument``); here they become the flags.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys

from overinterp.errors import USER_ERRORS

__all__ = ["main", "build_parser"]

#: library argument → the flag's dest where they differ (the rest share their name)
ARGUMENT_DESTS = {"database_url": "database", "out_dir": "out"}
#: a library hint naming a boolean argument ("fetch them with download=True")
_HINT = re.compile(r" with ([a-z_]+)=True\b")
#: errno of a write that failed for want of room or a writable disk
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
#: errno of a path no file system takes (too long, a symlink loop)
_PATH_ERRNOS = {errno.ENAMETOOLONG, errno.ELOOP}


def build_parser() -> argparse.ArgumentParser:
    """The ``overinterp`` parser with every command group."""
    from overinterp.cli import audit, check, core, experiments, human, imagenet, jobs, report

    ap = argparse.ArgumentParser(prog="overinterp", description="Is an image classifier right for the right reasons?")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for group in (audit, check, core, experiments, jobs, imagenet, human, report):
        group.add_parsers(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run ``overinterp ARGV``; returns the exit code."""
    ap = build_parser()
    try:
        args = ap.parse_args(argv)
    except SystemExit as exc:  # --help, or a bad option (argparse printed why): its exit code, returned
        return exc.code if isinstance(exc.code, int) else 2

    if args.version:
        import overinterp

        print(overinterp.__version__)
        return 0
    if args.command is None:
        ap.print_help()
        return 2
    import warnings

    from overinterp.training.pipeline import PipelineWarning

    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # type: ignore[no-untyped-def]
        if issubclass(category, PipelineWarning):  # a warning to the user: one line, no source line
            print(f"overinterp {args.command}: warning: {_HINT.sub(' with --force', str(message))}", file=sys.stderr)
        else:
            default_show(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("\ninterrupted: no partial output was written", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        print(f"overinterp {args.command}: error: {_message(ap, args, exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno in _PATH_ERRNOS:  # a path the user typed that no file system takes
            name = f"{str(exc.filename)[:80]}…" if len(str(exc.filename)) > 80 else exc.filename
            print(f"overinterp {args.command}: error: cannot use the path {name!r}: {exc.strerror}", file=sys.stderr)
            return 2
        if exc.errno not in _DISK_ERRNOS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"overinterp {args.command}: error: could not write{where}: {exc.strerror}; "
            "files finished before it are kept (free space and rerun: finished work is not redone)",
            file=sys.stderr,
        )
        return 2
    finally:
        warnings.showwarning = default_show


def _leaf(ap: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The (sub-)parser whose handler ``args.func`` is."""
    todo = [ap]
    while todo:
        parser = todo.pop()
        if parser.get_default("func") is getattr(args, "func", None):
            return parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return ap


def flag_of(ap: argparse.ArgumentParser, args: argparse.Namespace, argument: str) -> str | None:
    """The flag (or positional's name) of the library argument ``argument`` in this command."""
    dest = ARGUMENT_DESTS.get(argument, argument)
    for action in _leaf(ap, args)._actions:
        if action.dest == dest:
            return max(action.option_strings, key=len) if action.option_strings else (action.metavar or dest).upper()
    return None


def _message(ap: argparse.ArgumentParser, args: argparse.Namespace, exc: BaseException) -> str:
    """The error's message on one line, its library argument (if any) shown as this command's flag, and
    its hints " with ARGUMENT=True" as this command's flag (dropped where the command has none)."""
    argument = getattr(exc, "argument", None)
    text = str(exc)
    if argument:
        flag = flag_of(ap, args, argument)
        if flag:
            text = f"{flag}: {getattr(exc, 'message', exc)}"

    def hint(m: re.Match[str]) -> str:
        flag = flag_of(ap, args, m.group(1))
        return f" with {flag}" if flag and flag.startswith("--") else ""

    return " ".join(line.strip() for line in _HINT.sub(hint, text).splitlines() if line.strip())


if __name__ == "__main__":
    sys.exit(main())
