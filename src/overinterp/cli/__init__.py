"""The command line: builds the top parser from one module per command group and dispatches.

Each group module exposes ``add_parsers(subparsers)``; every sub-command registers
its handler with ``set_defaults(func=…)``; shared options live in
:mod:`overinterp.cli._common`. Only user errors (:data:`overinterp.errors.USER_ERRORS`)
become a one-line message and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys

from overinterp.errors import USER_ERRORS

__all__ = ["main", "build_parser"]


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
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("\ninterrupted: no partial output was written", file=sys.stderr)
        return 130
    except USER_ERRORS as exc:
        print(f"overinterp {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
