"""Every command and code block in ``README.md`` and ``docs/`` runs.

Fenced ``bash``/``sh``/``python`` blocks are extracted and run in order, one folder per page holding
the example files of :mod:`docs_data` (so a later block may use what an earlier one wrote). A block
that cannot run here (a GPU, a Ray cluster, the full datasets, an install) is preceded in the source
by ``<!-- skip: reason -->``; any other block that fails fails its page's test, naming the block.
The command-line reference is generated from the parsers at build time (``docs/hooks``); a test
checks that it covers every command and option.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
RUNNABLE = {"bash", "sh", "shell", "python", "py"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*skip:\s*(?P<reason>.*?)\s*-->\s*$", re.S)


def blocks(page: Path) -> list[dict]:
    """``{lang, body, line, skip}`` for every fenced block of ``page``; ``skip`` is the marker's
    reason ('' when the marker has none), ``None`` when the block has no marker."""
    text = page.read_text()
    found = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip().splitlines()
        marker = SKIP.search(before[-1]) if before else None
        found.append(
            {
                "lang": m.group("lang").lower(),
                "body": "\n".join(line[len(m.group("indent")) :] for line in m.group("body").splitlines()),
                "line": text.count("\n", 0, m.start()) + 1,
                "skip": marker.group("reason") if marker else None,
            }
        )
    return found


def test_pages_have_blocks_and_every_skip_marker_gives_a_reason():
    """Wrong implementations caught: an extractor that finds no block (every page would 'pass'),
    a marker without a reason, a marker on a block that is not runnable anyway (a stale marker)."""
    total = 0
    for page in PAGES:
        for b in blocks(page):
            total += b["lang"] in RUNNABLE
            where = f"{page.relative_to(ROOT)}:{b['line']}"
            if b["skip"] is not None:
                assert b["skip"], f"{where}: a skip marker needs a reason"
                assert b["lang"] in RUNNABLE, f"{where}: skip marker on a {b['lang'] or 'plain'} block"
    assert total >= 30, total


@pytest.fixture(scope="session")
def example_files(tmp_path_factory) -> Path:
    from docs_data import make_example_files

    return make_example_files(tmp_path_factory.mktemp("docs-examples"))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = "1"
    env["MPLBACKEND"] = "Agg"
    env.pop("OVERINTERP_DATA", None)
    return env


def run_page(page: Path, folder: Path) -> int:
    """Run ``page``'s runnable, unmarked blocks in ``folder``; returns how many ran."""
    ran = 0
    for i, b in enumerate(blocks(page)):
        if b["lang"] not in RUNNABLE or b["skip"] is not None:
            continue
        where = f"{page.name}:{b['line']}"
        if b["lang"] in ("python", "py"):
            script = folder / f"_block{i}.py"
            script.write_text(b["body"] + "\n")
            cmd = [sys.executable, script.name]
        else:
            cmd = ["bash", "-euo", "pipefail", "-c", b["body"]]
        proc = subprocess.run(cmd, cwd=folder, env=_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (
            f"{where}: the {b['lang']} block exited {proc.returncode} (mark it <!-- skip: reason --> if it "
            f"cannot run here)\n--- block ---\n{b['body']}\n--- stdout ---\n{proc.stdout[-3000:]}\n"
            f"--- stderr ---\n{proc.stderr[-3000:]}"
        )
        ran += 1
    return ran


def _runnable(page: Path) -> bool:
    return any(b["lang"] in RUNNABLE and b["skip"] is None for b in blocks(page))


@pytest.mark.slow
@pytest.mark.parametrize("page", [p for p in PAGES if _runnable(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_runnable_block_runs(page: Path, example_files: Path, tmp_path: Path) -> None:
    """Wrong implementations caught: a command renamed or an option removed in the code but not in
    the docs; an example that needs a file nobody makes; a Python example using a moved name."""
    folder = tmp_path / "work"
    shutil.copytree(example_files, folder)
    assert run_page(page, folder) >= 1


def test_a_failing_unmarked_block_fails_and_a_marked_one_is_skipped(tmp_path: Path) -> None:
    """The runner itself: a block that exits non-zero fails its page; the same block behind a skip
    marker does not run. Wrong implementation caught: a runner that ignores exit codes."""
    page = tmp_path / "page.md"
    page.write_text("x\n\n```bash\nexit 3\n```\n")
    with pytest.raises(AssertionError, match="exited 3"):
        run_page(page, tmp_path)
    page.write_text("x\n\n<!-- skip: shows a failure -->\n```bash\nexit 3\n```\n\n```python\nprint(1)\n```\n")
    assert run_page(page, tmp_path) == 1


def test_the_cli_reference_covers_every_command_and_option():
    """The generated reference (docs/hooks/cli_reference.py) has a section for every command and
    sub-command and names every option. Wrong implementation caught: a generator that does not
    descend into command groups (``subsets evaluate``, ``human serve``) or drops options."""
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        import cli_reference
    finally:
        sys.path.pop(0)
    from overinterp.cli import build_parser

    text = cli_reference.cli_markdown()
    commands = list(cli_reference.iter_commands(build_parser()))
    assert len(commands) >= 20
    for words, parser, _ in commands:
        assert f"## `overinterp {' '.join(words)}`" in text
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                assert f"`{flag}`" in text, (words, flag)
    assert "<!-- cli-reference -->" in (ROOT / "docs" / "reference" / "cli.md").read_text()
