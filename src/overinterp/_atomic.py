"""Atomic file writes: a temporary file in the target's folder, fsync, then rename.

A reader (or a rerun after a crash or Ctrl-C) sees the old file or the new one,
never a half-written one; the temporary file is removed on any failure. While
it is written, the temporary is locked (:func:`overinterp._locking.try_lock`), so
that a cleanup of killed writes' leftovers can tell it apart and keep it
(:func:`overinterp._locking.held_by_a_live_process`). A write that fails for want of
room (disk full, quota, file too large, read-only disk) is an
:class:`~overinterp.errors.OutputError` naming the target file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator

import torch

from overinterp._locking import try_lock
from overinterp.errors import OutputError

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save"]


def _default_mode() -> int:
    """The mode a plain ``open()`` would give (mkstemp makes 0600 files)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _no_room(exc: BaseException, folder: Path) -> str | None:
    """Why a write into ``folder`` failed for want of room, or ``None`` when it did not."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _NO_ROOM:
            return seen.strerror or os.strerror(seen.errno)
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, RuntimeError) and "write" in str(exc).lower():  # torch's zip writer hides the errno
        with contextlib.suppress(OSError):
            st = os.statvfs(folder)
            if st.f_bavail * st.f_frsize < 1 << 20:
                return os.strerror(errno.ENOSPC)
    return None


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
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        if exc.errno not in _NO_ROOM:
            raise
        raise OutputError(
            exc.errno, f"could not write {target}: {exc.strerror}; files finished before it are kept", str(target)
        ) from exc
    try:
        try_lock(fd)  # a new file nobody else has open: always succeeds; released when fd closes
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        why = _no_room(exc, target.parent) if isinstance(exc, Exception) else None
        if why is not None:
            raise OutputError(
                errno.ENOSPC,
                f"could not write {target}: {why}; it is unchanged, and files finished before it are kept",
                str(target),
            ) from exc
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
