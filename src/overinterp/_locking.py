"""Exclusive file locks: the one locking mechanism of the package (results files, job folders).

:func:`exclusive_lock` holds an OS lock (``fcntl.flock``) on a lock file for the
length of a ``with`` block. The kernel releases it when the holder's process
ends in any way (SIGKILL and the OOM killer included), so a lock of a dead
process never blocks anyone: the next taker gets it at once. The lock file
records who holds it (``{"pid", "host", "since", "what"}``) for the message a
refused taker gets, and is removed on release — also when the block raised, so
a refused write leaves no lock file behind. A process killed while holding
leaves the file (holder record of a dead process, no lock on it); the next
taker locks it, rewrites the record and removes it when done.

Removing a lock file that another process may be waiting on is safe here: a
taker that wins the lock on a file which is no longer the one at ``path`` (its
holder removed it meanwhile) lets go and takes the new one.

:func:`try_lock` marks a file a writer is still writing (the temporaries of
:mod:`overinterp._atomic`), so that :func:`held_by_a_live_process` can tell a
live writer's temporary from a killed writer's leftover.
"""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from overinterp.errors import LockHeldError

try:
    import fcntl
except ImportError:  # pragma: no cover - no flock on this platform (Windows): locks are not enforced
    fcntl = None  # type: ignore[assignment]

__all__ = ["exclusive_lock", "read_holder", "try_lock", "held_by_a_live_process", "LockHeldError"]


def read_holder(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The holder record in a lock file (``{}`` when it is missing or not one)."""
    try:
        d = json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return d if isinstance(d, dict) else {}


def try_lock(fd: int) -> bool:
    """Take an exclusive lock on the open file ``fd`` without waiting; False when another process holds one."""
    if fcntl is None:  # pragma: no cover
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def held_by_a_live_process(path: str | os.PathLike[str]) -> bool:
    """True when a process holds a lock on ``path`` (a writer still at work); never waits."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return not try_lock(fd)
    finally:
        os.close(fd)  # releases the probe's lock


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _describe(path: Path, holder: dict[str, Any], what: str) -> str:
    who = (
        f"process {holder.get('pid')} on host {holder.get('host')}"
        + (f" (since {holder['since']})" if holder.get("since") else "")
        if holder.get("pid")
        else "another process (it has not recorded its pid yet)"
    )
    return f"{what or path.parent} is in use by {who}: {path} is locked. Wait for it to finish, or stop that process"


@contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, wait: bool = True, what: str = "") -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created; its folder must exist) for the block.

    Args:
        path: the lock file, e.g. ``job/job.lock`` or ``results.csv.lock``.
        wait: block until the holder lets go (True), or raise at once (False).
        what: what the lock guards, for the message (e.g. ``"job folder runs/x"``).

    Raises:
        LockHeldError: ``wait=False`` and a live process holds the lock; the
            message names its pid and host (from the lock file's record).
    """
    lock = Path(path)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        if fcntl is None:  # pragma: no cover
            break
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            holder: dict[str, Any] = {}
            for _ in range(20):  # the holder writes its record right after it locks: give it a moment
                holder = read_holder(lock)
                if holder.get("pid"):
                    break
                time.sleep(0.025)
            raise LockHeldError(_describe(lock, holder, what), path=lock, holder=holder) from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, lock):
            break
        os.close(fd)  # its holder removed it while this process waited: take the file now at ``path``
    try:
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "what": what,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        yield lock
    finally:
        try:
            if fcntl is None or _same_file(fd, lock):
                lock.unlink(missing_ok=True)  # while still holding it: a waiter then retakes the new file
        finally:
            os.close(fd)  # releases the lock
