"""The fault suite's helpers live beside it (``faults.*``, ``tests/`` is on the path); the
study generator is tests/human/humankit.py, put on the path here."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HUMAN_TESTS = Path(__file__).resolve().parents[1] / "human"
if str(HUMAN_TESTS) not in sys.path:
    sys.path.insert(0, str(HUMAN_TESTS))


def pytest_configure(config: pytest.Config) -> None:
    # starlette asks for "httpx2"; the pinned test client is httpx 0.28.1
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture()
def study(tmp_path: Path):
    """A freshly built tiny study (tests/human/humankit.py): (folder, manifest)."""
    from humankit import build_tiny_study

    out = tmp_path / "study"
    return out, build_tiny_study(out)
