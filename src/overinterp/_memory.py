"""How much memory this machine can give, and refusing sizes that would not fit before allocating them."""

from __future__ import annotations

import os

from overinterp.errors import UserInputError

__all__ = ["available_memory", "check_fits", "human_bytes"]


def available_memory() -> int:
    """Bytes this process can still allocate: ``MemAvailable`` (Linux), else the physical memory."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def human_bytes(n: float) -> str:
    """``10.8e12`` → ``"10.8 TB"``."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.3g} PB"


def check_fits(nbytes: float, what: str, *, argument: str | None = None) -> None:
    """Refuse (a :class:`~overinterp.errors.UserInputError`) to allocate ``nbytes`` for ``what``
    when that is more than this machine has available."""
    free = available_memory()
    if nbytes > free:
        raise UserInputError(
            f"{what} would need {human_bytes(nbytes)} of memory; this machine has {human_bytes(free)} available",
            argument=argument,
        )
