"""The reaper of a driver's local Ray cluster (Linux: reads ``/proc``).

Started by :class:`~overinterp.jobs.ray_executor.RayExecutor` as
``python -I _reaper.py DRIVER_PID TOKEN`` — this file run by its path, so it
imports nothing but the standard library and is up in milliseconds — in its own
session (Ctrl-C in the terminal does not reach it), *before* the driver starts
Ray. The driver starts Ray with ``OVERINTERP_RAY_REAPER=TOKEN`` in its
environment, which every Ray process inherits (GCS, raylet, agents, workers and
what they start), whoever its parent is by the time the driver dies.

While the driver lives, the reaper also records the driver's descendants whose
command line names Ray (as in overinterp 0.2). ``stop`` on stdin ends it
quietly (the driver shut Ray down itself). When the driver is gone instead (EOF
on stdin, or the reaper's parent is no longer the driver) it SIGKILLs every
process whose environment carries the token, every recorded one still running,
and all their descendants (Ray's agents overwrite their environment with their
process title, so they are found as the raylet's children: each pass snapshots
the process tree before killing anything), pass after pass until none has been
seen for :data:`QUIET` seconds (a process half-way through being started is
caught on a later pass), at most :data:`BOUND` seconds; then it exits. A driver
killed at any moment — Ray's start-up included — so leaves no Ray process
behind for longer than about a second. Processes are told apart by the token
and by (pid, start time), never by a pid alone.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from typing import Iterable

#: the environment variable that marks a driver's Ray processes
MARK = "OVERINTERP_RAY_REAPER"
#: seconds without a marked process before the reaper stops looking
QUIET = 1.0
#: seconds the reaper looks at most after the driver is gone
BOUND = 30.0
#: seconds between looks
POLL = 0.2


def _table() -> dict[int, tuple[bytes, int, bytes]]:
    """pid → (state letter, parent pid, start time) of every process now."""
    table = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    s = f.read()
            except OSError:
                continue
            rest = s[s.rindex(b")") + 2 :].split()
            table[int(d)] = (rest[0], int(rest[1]), rest[19])
    return table


def _descendants(roots: set[int], table: dict[int, tuple[bytes, int, bytes]]) -> set[int]:
    kids: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        kids.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    todo = [k for r in roots for k in kids.get(r, [])]
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo += kids.get(pid, [])
    return out


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def marked(token: str, me: int | None = None) -> list[int]:
    """Processes (not ``me``) whose environment holds ``MARK=token``. A process that rewrote its title
    over its environment (Ray's agents do) no longer shows it: :func:`reap` finds those as descendants."""
    needle = f"\0{MARK}={token}\0".encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == me:
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                env = b"\0" + f.read() + b"\0"
        except OSError:  # gone, or another user's
            continue
        if needle in env:
            out.append(int(d))
    return out


def reap(
    token: str,
    known: Iterable[tuple[int, bytes]] = (),
    *,
    me: int | None = None,
    quiet: float = QUIET,
    bound: float = BOUND,
) -> int:
    """SIGKILL the processes marked with ``token``, those in ``known`` ((pid, start time) pairs) still
    running, and every descendant of them — each pass takes its snapshot of the process tree before
    killing, so a parent's death does not hide its children — until a pass finds none for ``quiet``
    seconds (at most ``bound``); returns how many were killed."""
    killed: set[int] = set()
    start = last_seen = time.monotonic()
    while time.monotonic() - last_seen < quiet and time.monotonic() - start < bound:
        table = _table()
        roots = {p for p in marked(token, me) if p in table}
        roots |= {p for p, started in known if p in table and table[p][2] == started}
        victims = [p for p in roots | _descendants(roots, table) if p != me and table[p][0] != b"Z"]
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            except OSError:
                pass
        if victims:
            last_seen = time.monotonic()
        time.sleep(POLL)
    return len(killed)


def watch(driver: int, me: int) -> tuple[bool, set[tuple[int, bytes]]]:
    """Until the driver says ``stop`` (``False``) or is gone (``True``), record its descendants whose
    command line names Ray, as (pid, start time): those it started itself lose the token in their
    environment no more than the others, but this keeps them if the token were ever lost."""
    known: set[tuple[int, bytes]] = set()
    while True:
        ready, _, _ = select.select([sys.stdin], [], [], POLL)
        if ready:
            line = sys.stdin.buffer.readline()
            if line.strip() == b"stop":
                return False, known
            if not line:
                return True, known
        if os.getppid() != driver:
            return True, known
        table = _table()
        for pid in _descendants({driver}, table) - {me}:
            if b"ray" in _cmdline(pid):
                known.add((pid, table[pid][2]))


def main(argv: list[str]) -> int:
    driver, token, me = int(argv[0]), argv[1], os.getpid()
    gone, known = watch(driver, me)
    if gone:
        reap(token, known, me=me)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
