"""Hints that suggest a flag suggest one that exists, in the command that printed them.

* Statically: every ``--flag`` named in a message of the package (string literals that are not
  docstrings; the study pages' CSS variables aside) is an option of some ``overinterp`` command.
* At run time: every command that opens a dataset, given a registered dataset that is not on disk,
  fails with one line whose suggested flags are all options *of that command*.
"""

from __future__ import annotations

import argparse
import ast

import pytest

from overinterp.cli import build_parser, main
from source_scan import FLAG, SRC, docstrings

NOT_HINTS = {SRC / "human" / "pages.py"}  # CSS custom properties (--accent, --bg, …)


def _parsers(ap: argparse.ArgumentParser):
    yield ap
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                yield from _parsers(child)


def _flags(parser: argparse.ArgumentParser) -> set[str]:
    return {f for a in parser._actions for f in a.option_strings}


def test_every_flag_named_in_a_message_exists():
    """Wrong implementations caught: a message naming a renamed or removed option (``--exact``
    after it became ``--exact-end``), a hint inventing a flag no command has."""
    known = set().union(*(_flags(p) for p in _parsers(build_parser())))
    unknown = []
    for path in sorted(SRC.rglob("*.py")):
        if path in NOT_HINTS:
            continue
        tree = ast.parse(path.read_text())
        docs = docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                unknown += [
                    f"{path.relative_to(SRC)}:{node.lineno}: {f}" for f in FLAG.findall(node.value) if f not in known
                ]
    assert not unknown, "messages name options no command has:\n" + "\n".join(unknown)


#: one command line per command that opens a dataset, ``{data}`` a registered dataset not on disk
OPENS_DATA = [
    ["audit", "smallcnn", "{data}", "--out", "{out}/a"],
    ["check-method", "smallcnn", "{data}"],
    ["backselect", "--model", "smallcnn", "--images", "{data}", "--out", "{out}/t.pt"],
    ["backselect-dataset", "--model", "smallcnn", "--dataset", "{data}", "--out", "{out}/j"],
    ["evaluate", "--model", "smallcnn", "--dataset", "{data}"],
    ["train", "--arch", "smallcnn", "--data", "{data}", "--out", "{out}/r"],
    ["robust-sis", "--model", "smallcnn", "--data", "{data}", "--out", "{out}/s"],
]


@pytest.mark.parametrize("argv", OPENS_DATA, ids=lambda a: a[0])
@pytest.mark.parametrize("dataset", ["cifar10:test", "cifar10.1", "cifar10c:fog/5"])
def test_a_missing_dataset_suggests_only_flags_of_the_command(argv, dataset, tmp_path, capsys):
    """Wrong implementation caught: the data layer's "Pass download=True (--download)" printed by
    ``audit`` or ``backselect-dataset``, which have no ``--download``; a command that has the flag
    but whose hint does not name it."""
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [a.format(data=f"{dataset}@{empty}", out=tmp_path) for a in argv]
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()  # progress lines, then the error
    errors = [line for line in lines if line.startswith(f"overinterp {argv[0]}: error:")]
    assert len(errors) == 1 and "not found" in errors[0], lines
    err = errors[0]
    parser = next(p for p in _parsers(build_parser()) if p.prog == f"overinterp {argv[0]}")
    suggested = set(FLAG.findall(err))
    assert suggested <= _flags(parser), (argv[0], suggested - _flags(parser), err)
    assert ("--download" in err) == ("--download" in _flags(parser)), err
