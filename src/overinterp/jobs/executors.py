"""Executors run a job's shard tasks; the job does not care where.

An :class:`Executor` takes :class:`~overinterp.jobs.shard.ShardTask` objects and
calls ``on_result`` with each :class:`~overinterp.jobs.shard.ShardResult` as it
finishes (any order). :class:`LocalExecutor` runs them one after another in this
process; ``ray`` (``overinterp[ray]``) runs them as Ray tasks. Register others
with :func:`register_executor`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

from overinterp.jobs.shard import ShardResult, ShardTask, run_shard

__all__ = ["Executor", "LocalExecutor", "register_executor", "get_executor", "list_executors"]


class Executor(ABC):
    """Runs shard tasks. Implementations must let only complete shard files exist
    (``run_shard`` writes atomically) and re-raise the first failure that their
    retries cannot cure."""

    name = "executor"
    #: True when the executor shows per-image progress of the shard in this process
    shows_shard_progress = False

    @abstractmethod
    def run(self, tasks: Sequence[ShardTask], on_result: Callable[[ShardResult], None]) -> None:
        """Run every task; call ``on_result`` once per finished task."""

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], on_result: Callable[[Any], None]) -> None:
        """Run ``fn(item)`` for every item and call ``on_result`` with each return
        value as it finishes (for other work than shards, e.g. training replicates).
        ``fn`` must be a module-level function and the items plain data, so that
        remote executors can ship them. Default: one after another, here."""
        for item in items:
            on_result(fn(item))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class LocalExecutor(Executor):
    """Shards one after another in this process (model and images loaded once)."""

    name = "local"
    shows_shard_progress = True

    def run(self, tasks: Sequence[ShardTask], on_result: Callable[[ShardResult], None]) -> None:
        for task in tasks:
            on_result(run_shard(task))


_EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor}


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    _EXECUTORS[name] = factory


def list_executors() -> list[str]:
    return sorted(set(_EXECUTORS) | {"ray"})


def get_executor(name: str, **options: Any) -> Executor:
    """An executor by name: ``local`` or ``ray`` (needs ``pip install 'overinterp[ray]'``)."""
    if name == "ray" and "ray" not in _EXECUTORS:
        try:
            from overinterp.jobs.ray_executor import RayExecutor
        except ImportError as exc:
            raise RuntimeError(
                f"--executor ray needs Ray: pip install 'overinterp[ray]' (or pip install ray); import failed: {exc}"
            ) from exc
        register_executor("ray", RayExecutor)
    if name not in _EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(list_executors())}")
    return _EXECUTORS[name](**options)
