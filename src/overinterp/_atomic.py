"""Atomic file writes: a temporary file in the target's folder, fsync, then rename.

A reader (or a rerun after a crash or Ctrl-C) sees the old file or the new one,
never a half-written one; the temporary file is removed on any failure. While
it is written, the temporary is locked (:func:`overinterp._locking.try_lock`), so
that a cleanup of killed writes' leftovers can tell it apart and keep it
(:func:`overinterp._locking.held_by_a_live_process`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import torch

from overinterp._locking import try_lock

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save"]


def _default_mode() -> int:
    """The mode a plain ``open()`` would give (mkstemp makes 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", *, make_parents: bool = True) -> Iterator[IO[Any]]:
    """Context manager yielding a handle whose content replaces ``path`` on success."""
    target = Path(path)
    if make_parents:
        target.parent.mkdir(parents=True, exist_ok=True)
    elif not target.parent.is_dir():
        raise FileNotFoundError(f"cannot write {target}: directory {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        try_lock(fd)  # a new file nobody else has open: always succeeds; released when fd closes
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with atomic_write(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return Path(path)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str], *, make_parents: bool = True) -> Path:
    with atomic_write(path, "wb", make_parents=make_parents) as fh:
        torch.save(obj, fh)
    return Path(path)
