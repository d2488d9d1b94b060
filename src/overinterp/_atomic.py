"""Atomic file writes: a temporary file in the target's folder, fsync, then rename; content seals.

A reader (or a rerun after a crash or Ctrl-C) sees the old file or the new one,
never a half-written one; the temporary file is removed on any failure. While
it is written, the temporary is locked (:func:`overinterp._locking.try_lock`), so
that a cleanup of killed writes' leftovers can tell it apart and keep it
(:func:`overinterp._locking.held_by_a_live_process`). A write that fails for want of
room (disk full, quota, file too large, read-only disk) is an
:class:`~overinterp.errors.OutputError` naming the target file.

**Seals.** Every checkpoint and trace the project writes is a dict that carries
``content_sha256`` (:data:`SEAL_KEY`): the sha256 of its content (:func:`content_sha256`:
every key, value, tensor dtype, shape and byte), added by :func:`seal` and checked by
:func:`check_seal` on load, so that a flipped byte in a weight is an error naming the file
instead of a silently different model. The hash is of the content, not the file's bytes, so it
survives ``torch.save``'s container and needs no sidecar file that could get lost on a copy.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import torch

from overinterp._locking import try_lock
from overinterp.errors import IntegrityError, OutputError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "SEAL_KEY",
    "content_sha256",
    "seal",
    "check_seal",
    "file_sha256",
]

#: the key of a sealed dict that holds the sha256 of the rest of it
SEAL_KEY = "content_sha256"


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


# --------------------------------------------------------------------------- seals


def _feed(h: Any, obj: Any) -> None:
    """Feed ``obj`` into hash ``h`` unambiguously (type tags and lengths before contents)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().to("cpu").contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        items = sorted(obj.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
        h.update(f"D{len(items)}|".encode())
        for key, value in items:
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, (list, tuple)):  # one kind: writers may store a tuple as a list
        h.update(f"L{len(obj)}|".encode())
        for value in obj:
            _feed(h, value)
    else:  # None, bool, int, float (repr is exact), str, torch.dtype / torch.Size …
        text = repr(obj)
        h.update(f"S{type(obj).__name__}{len(text)}|{text}".encode())


def content_sha256(obj: Any) -> str:
    """sha256 (hex) of a nested dict/list/tuple/tensor/scalar structure's content."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def seal(payload: Mapping[str, Any]) -> dict[str, Any]:
    """``payload`` plus :data:`SEAL_KEY`: the :func:`content_sha256` of the rest."""
    body = {k: v for k, v in payload.items() if k != SEAL_KEY}
    return {**body, SEAL_KEY: content_sha256(body)}


def check_seal(obj: Mapping[str, Any], source: str, *, required: bool) -> dict[str, Any]:
    """Verify a sealed dict read from ``source``; returns it without :data:`SEAL_KEY`.

    A dict without a seal is an error when ``required`` (its format version promises one); else
    it was written by an older version and loads with a warning that it cannot be checked.

    Raises:
        IntegrityError: the content does not match its seal (the file changed after it was
            written: a flipped bit, an edit, a truncated copy), or a required seal is missing.
    """
    body = {k: v for k, v in obj.items() if k != SEAL_KEY}
    stored = obj.get(SEAL_KEY)
    if stored is None:
        if required:
            raise IntegrityError(f"{source} carries no content hash although its format version has one: corrupt")
        warnings.warn(
            f"{source} was written by an older overinterp without a content hash, so corruption in it cannot "
            "be detected; save it again to add one",
            stacklevel=3,
        )
        return body
    actual = content_sha256(body)
    if actual != stored:
        raise IntegrityError(
            f"{source} is corrupt: its content does not match the sha256 it was written with "
            f"(stored {str(stored)[:16]}…, now {actual[:16]}…); the file changed after it was written "
            "(a damaged disk or copy, or an edit): restore it from a good copy or recreate it"
        )
    return body


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 (hex) of a file's bytes (provenance of files the project did not write)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
