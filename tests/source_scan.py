"""Helpers of the tests that read the package's own source (message and hint scans)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

#: the package's source folder
SRC = Path(__file__).resolve().parents[1] / "src" / "overinterp"
#: a command-line flag as it appears in a message (``--out``, ``--trust-code``)
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def docstrings(tree: ast.AST) -> set[int]:
    """``id`` of every docstring constant in ``tree`` (module, class and function docstrings)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found
