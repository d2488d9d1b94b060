"""The library speaks in library arguments, the command line maps them to flags (issue 22,
item 4): no message outside ``overinterp.cli`` names a command-line flag as the thing to change.

A ``--flag`` may appear only inside a whole command shown to run (the text holds
``overinterp …`` or a backticked command, as the report's "how to make this" notes do).
Exempt: the study pages' CSS variables, the method descriptions in ``sis/methods``
(the CLI's ``--method`` help is generated from them), and the functions of :data:`COMMAND_BUILDERS`,
whose every string is a piece of one whole command line they return (the audit's recommended
``overinterp check-method …``).
"""

from __future__ import annotations

import ast
from pathlib import Path

from source_scan import FLAG, SRC, docstrings

EXEMPT = {SRC / "human" / "pages.py"}
EXEMPT_DIRS = {SRC / "cli", SRC / "sis" / "methods"}
#: module → functions that return a whole ``overinterp …`` command line, built piece by piece
COMMAND_BUILDERS = {SRC / "experiments" / "check_method.py": {"check_command"}}


def _texts(tree: ast.AST, builders: frozenset[str] | set[str] = frozenset()):
    """(line, text) of every string literal that is not a docstring or inside a function of
    ``builders``; an f-string as its constant parts joined."""
    skip = docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in builders:
            skip.update(id(n) for n in ast.walk(node) if isinstance(n, (ast.Constant, ast.JoinedStr)))
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr) and id(node) not in skip:
            parts = [v for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            skip.update(id(v) for v in parts)
            yield node.lineno, "{}".join(v.value for v in parts)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.lineno, node.value


def library_flag_mentions(src: Path = SRC) -> list[str]:
    """``path:line: --flag`` for every flag a library message names outside a command shown to run."""
    found = []
    for path in sorted(src.rglob("*.py")):
        if path in EXEMPT or any(d in path.parents for d in EXEMPT_DIRS):
            continue
        for line, text in _texts(ast.parse(path.read_text(encoding="utf-8")), COMMAND_BUILDERS.get(path, set())):
            flags = FLAG.findall(text)
            if flags and "overinterp " not in text and "`" not in text:
                found += [f"{path.relative_to(src)}:{line}: {f} in {text[:80]!r}" for f in flags]
    return found


def test_library_messages_name_arguments_not_flags():
    """Wrong implementations caught: ``raise ValueError("use another --out folder")`` in
    experiments/, ``"(--force)"`` in human/study.py, ``"Lower --lr"`` in training/ — the
    library called from Python then tells its caller to change a flag it never passed."""
    found = library_flag_mentions()
    assert not found, "library messages that name CLI flags (name the argument; cli maps it):\n" + "\n".join(found)


def test_the_scan_finds_a_flag(tmp_path):
    (tmp_path / "m.py").write_text(
        '"""Doc --ok."""\nX = "use another --out folder"\nY = f"run `overinterp x --y {1}`"\nZ = f"a {1} --zed"\n'
    )
    found = library_flag_mentions(tmp_path)
    assert [f.split(": ")[1].split(" in")[0] for f in found] == ["--zed", "--out"] or sorted(
        f.split(": ")[1].split(" in")[0] for f in found
    ) == ["--out", "--zed"]
