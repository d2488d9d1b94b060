"""A full disk, for one file: writes of files whose temporary starts with ``prefix`` go to
``/dev/full`` (the kernel's ENOSPC), every other write is untouched. Shared by
tests/faults/test_fault_disk_full.py and bench/faults.py; import as ``faults.diskfull``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator

__all__ = ["disk_full_for"]


@contextlib.contextmanager
def disk_full_for(prefix: str) -> Iterator[list[str]]:
    """While active, atomic writes of files named ``prefix…`` fail with ENOSPC; yields the targets refused."""
    real = tempfile.mkstemp
    refused: list[str] = []

    def mkstemp(suffix=None, prefix_=None, dir=None, text=False, **kw):  # noqa: A002 - tempfile's own names
        name = kw.pop("prefix", prefix_) or ""
        if name.startswith(f".{prefix}"):
            refused.append(name)
            return os.open("/dev/full", os.O_WRONLY), os.path.join(str(dir), f"{name}fullfull{suffix or ''}")
        return real(suffix=suffix, prefix=name or None, dir=dir, text=text)

    tempfile.mkstemp = mkstemp  # type: ignore[assignment]
    try:
        yield refused
    finally:
        tempfile.mkstemp = real  # type: ignore[assignment]
