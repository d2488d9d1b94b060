"""Fixtures for tests/human; the generators are in humankit.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from humankit import build_tiny_study


def pytest_configure(config: pytest.Config) -> None:
    # starlette asks for "httpx2"; the pinned test client is httpx 0.28.1
    config.addinivalue_line("filterwarnings", "ignore:Using `httpx` with `starlette.testclient`")


@pytest.fixture()
def study(tmp_path: Path):
    """A freshly built tiny study: (folder, manifest)."""
    out = tmp_path / "study"
    return out, build_tiny_study(out)
