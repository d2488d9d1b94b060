"""What an executor is: the contract every executor meets, and the local one.

An :class:`Executor` takes :class:`~overinterp.jobs.shard.ShardTask` objects and
calls ``on_result`` with each :class:`~overinterp.jobs.shard.ShardResult` as it
finishes (any order). :class:`LocalExecutor` runs them one after another in this
process; :class:`~overinterp.jobs.ray_executor.RayExecutor` runs them as Ray
tasks. Executors by name: :mod:`overinterp.jobs.executors`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Sequence

from overinterp.jobs.shard import ShardResult, ShardTask, run_shard

__all__ = ["Executor", "LocalExecutor"]


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
