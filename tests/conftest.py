"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

#: ``../shared/data`` beside the checkout (real data; tests that need it skip when absent).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread for the whole suite: the models are tiny, and on a shared
    2-core machine spin-waiting OpenMP workers can run many times slower than one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; skips the test with a reason when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the shared data folder {SHARED_DATA} (absent here)")
    return SHARED_DATA
