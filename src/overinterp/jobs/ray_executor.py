"""Run a job's shards (or any picklable work) as Ray tasks: ``--executor ray``.

Needs ``pip install 'overinterp[ray]'``. Each shard is one Ray task that asks for
``num_cpus`` CPUs and ``num_gpus`` GPUs (fractions allowed: ``0.25`` packs four
tasks per GPU) and runs :func:`~overinterp.jobs.shard.run_shard`, which writes
the same files as the local executor into the job folder — so the folder must be
a path every worker reaches (a shared filesystem mounted at the same place).
Object stores are not supported.

* torch threads per task: the job's ``threads`` if set, else ``num_cpus``
  rounded down (at least 1); recorded per shard and in the manifest's run entry.
* Failures: a task whose worker dies (killed, out of memory, node lost) or that
  raises is retried up to ``max_retries`` times; a retried shard overwrites
  nothing complete and writes the same bytes. A failure the retries cannot cure
  cancels the remaining tasks and is raised.
* Ctrl-C (or any error in the driver) cancels every unfinished task (pending
  ones never start, running ones get ``KeyboardInterrupt`` between Python
  calls — a call blocked inside C does not see it — and are killed when still
  running after ``grace`` seconds), and removes the cancelled shards' partial files, so
  only complete shards remain; rerunning the command resumes.
* A driver killed by SIGKILL (or the OOM killer) cannot clean up, and Ray 2.58
  leaves the agents of a local cluster it started (``ray::DashboardAgent``,
  ``ray::RuntimeEnvAgent``) running for good after the raylet dies. So when this
  executor starts the local cluster itself, it first starts a small reaper
  process (:mod:`overinterp.jobs._reaper`; Linux: it reads ``/proc``), then starts
  Ray with a token in the environment that every Ray process inherits; once the
  driver is gone — at any moment, Ray's start-up included — the reaper SIGKILLs
  every process carrying the token (about a second after the driver's death,
  30 s at most). Clusters this executor only connects to (``address``,
  ``$RAY_ADDRESS``, or Ray already initialised) are left alone: their owner
  stops them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import ray

from overinterp.jobs import _reaper
from overinterp.jobs.executor import Executor
from overinterp.jobs.shard import ShardResult, ShardTask, run_shard, shard_complete, shard_paths

__all__ = ["RayExecutor"]


def _call(fn: Callable[[Any], Any], item: Any, threads: int) -> Any:
    """Worker side: set the default torch thread count, then ``fn(item)``."""
    import torch

    torch.set_num_threads(threads)
    return fn(item)


def _call_shard(
    fn: Callable[[ShardTask], ShardResult], task: ShardTask, spec: dict[str, Any], threads: int
) -> ShardResult:
    """Worker side: a shard task whose (shared, possibly large) spec travelled
    through the object store once per job instead of once per task."""
    return _call(fn, dataclasses.replace(task, spec=spec), threads)


class RayExecutor(Executor):
    """Shards as Ray tasks on a local or remote Ray cluster.

    Args:
        address: ``None`` — the cluster in ``$RAY_ADDRESS``, else a new local one
            (stopped afterwards); ``"auto"`` — the running cluster on this node;
            ``"ray://host:10001"`` — Ray client. Ignored when Ray is already
            initialised in this process (the caller owns that connection).
        num_cpus: CPUs each task reserves (fractions allowed).
        num_gpus: GPUs each task reserves (fractions allowed, e.g. 0.25);
            needed for ``device="cuda"`` (Ray hides GPUs from tasks without).
        max_retries: retries per task after a worker crash or an exception.
        grace: seconds cancelled tasks get to stop before they are killed.
        task_fn: what a shard task runs (default :func:`run_shard`); must be a
            function the workers can import or unpickle.
        init_kwargs: more ``ray.init`` arguments when this executor starts Ray.
    """

    name = "ray"
    shows_shard_progress = False

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        max_retries: int = 3,
        grace: float = 10.0,
        task_fn: Callable[[ShardTask], ShardResult] = run_shard,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if num_cpus < 0 or num_gpus < 0 or (num_cpus == 0 and num_gpus == 0):
            raise ValueError(f"a task needs CPUs or GPUs; got num_cpus={num_cpus}, num_gpus={num_gpus}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.address = address
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.max_retries = int(max_retries)
        self.grace = float(grace)
        self.task_fn = task_fn
        self.init_kwargs = dict(init_kwargs or {})
        self.threads_per_task = max(1, math.floor(self.num_cpus))

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self.address,
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "max_retries": self.max_retries,
            "threads_per_task": self.threads_per_task,
            "ray": ray.__version__,
        }

    # ------------------------------------------------------------------ plumbing

    def _options(self) -> dict[str, Any]:
        return {
            "num_cpus": self.num_cpus,
            "num_gpus": self.num_gpus,
            "max_retries": self.max_retries,
            "retry_exceptions": self.max_retries > 0,
        }

    def _connect(self) -> bool:
        """Initialise Ray unless it already is; True when this call started it.
        When that starts a new local cluster, a reaper watches this driver."""
        if ray.is_initialized():
            return False
        kwargs = {"include_dashboard": False, "log_to_driver": True} | self.init_kwargs
        local = self.address is None and not os.environ.get("RAY_ADDRESS")
        token = f"{os.getpid()}-{secrets.token_hex(8)}" if local else None
        self._reaper = _start_reaper(token) if token else None  # before Ray starts: start-up is covered too
        try:
            with _marked(token if self._reaper is not None else None):
                ray.init(address=self.address, **kwargs)
        except BaseException:
            self._stop_reaper()
            raise
        return True

    def _disconnect(self) -> None:
        try:
            ray.shutdown()
        finally:
            self._stop_reaper()

    def _stop_reaper(self) -> None:
        reaper, self._reaper = getattr(self, "_reaper", None), None
        if reaper is not None:
            _stop_reaper(reaper)

    def _collect(
        self,
        refs: dict[Any, Any],
        on_result: Callable[[Any], None],
        on_cancel: Callable[[list[Any]], None] | None = None,
    ) -> None:
        """Call ``on_result`` per finished task (``ray.wait``); on any failure or
        Ctrl-C cancel the rest, let them stop, and re-raise."""
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    on_result(ray.get(ref))
        except BaseException:
            stopped = self._cancel(pending)
            if on_cancel is not None:
                on_cancel([refs[r] for r in stopped])
            raise

    def _cancel(self, refs: list[Any]) -> list[Any]:
        """Cancel ``refs``; returns those known to have stopped."""
        if not refs:
            return []
        for ref in refs:
            ray.cancel(ref, force=False)  # pending: never starts; running: KeyboardInterrupt
        done, left = ray.wait(refs, num_returns=len(refs), timeout=self.grace)
        for ref in left:
            ray.cancel(ref, force=True)  # still running after the grace period: kill the worker
        more, _ = ray.wait(left, num_returns=len(left), timeout=self.grace) if left else ([], [])
        stopped = list(done) + list(more)
        for ref in stopped:  # collect their outcomes, so Ray does not report them as unhandled errors later
            try:
                ray.get(ref, timeout=self.grace)
            except Exception:  # noqa: BLE001 - cancelled or failed: the first failure is being raised already
                pass
        return stopped

    # ------------------------------------------------------------------ API

    def run(self, tasks: Sequence[ShardTask], on_result: Callable[[ShardResult], None]) -> None:
        """Run the shard tasks as Ray tasks; ``on_result`` as each finishes."""
        if not tasks:
            return
        for task in tasks:
            device = str(task.spec.get("device", "cpu"))
            if device.startswith("cuda") and self.num_gpus == 0:
                raise ValueError(
                    f"device {device!r} needs GPUs per task (num_gpus, e.g. 1 or 0.25): "
                    "Ray hides GPUs from tasks that reserve none"
                )
        started = self._connect()
        try:
            remote = ray.remote(_call_shard).options(**self._options())
            specs: dict[str, Any] = {}
            refs: dict[Any, ShardTask] = {}
            for task in tasks:
                key = json.dumps(task.spec, sort_keys=True, default=str)
                if key not in specs:
                    specs[key] = ray.put(task.spec)
                refs[
                    remote.remote(self.task_fn, dataclasses.replace(task, spec={}), specs[key], self.threads_per_task)
                ] = task
            self._collect(refs, on_result, on_cancel=_discard_partial_shards)
        finally:
            if started:
                self._disconnect()

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any], on_result: Callable[[Any], None]) -> None:
        """``fn(item)`` per item as Ray tasks (same resources and retries as shards)."""
        if not items:
            return
        started = self._connect()
        try:
            remote = ray.remote(_call).options(**self._options())
            refs = {remote.remote(fn, item, self.threads_per_task): item for item in items}
            self._collect(refs, on_result)
        finally:
            if started:
                self._disconnect()


def _discard_partial_shards(tasks: list[ShardTask]) -> None:
    """Remove what stopped tasks left of incomplete shards: a trace without a
    valid commit record, and atomic-write temporaries."""
    for task in tasks:
        if shard_complete(task.out_dir, task.shard) is not None:
            continue
        pt, rec = shard_paths(task.out_dir, task.shard)
        for path in (pt, rec, *Path(pt.parent).glob(f".{pt.name}.*.tmp"), *Path(pt.parent).glob(f".{rec.name}.*.tmp")):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reaper


@contextmanager
def _marked(token: str | None) -> Iterator[None]:
    """``$OVERINTERP_RAY_REAPER=token`` while Ray starts: every process of the new
    cluster inherits it, so that the reaper finds them whoever their parent is."""
    if token is None:
        yield
        return
    before = os.environ.get(_reaper.MARK)
    os.environ[_reaper.MARK] = token
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_reaper.MARK, None)
        else:
            os.environ[_reaper.MARK] = before


def _start_reaper(token: str) -> subprocess.Popen | None:
    """The reaper (:mod:`overinterp.jobs._reaper`) of this driver's local Ray processes
    (``None`` where there is no ``/proc``). It runs as a script by path: standard library only."""
    if not os.path.isdir("/proc/self"):
        return None
    return subprocess.Popen(
        [sys.executable, "-I", _reaper.__file__, str(os.getpid()), token],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def _stop_reaper(reaper: subprocess.Popen) -> None:
    try:
        assert reaper.stdin is not None
        reaper.stdin.write(b"stop\n")
        reaper.stdin.close()
    except OSError:
        pass
    try:
        reaper.wait(timeout=5)
    except subprocess.TimeoutExpired:
        reaper.kill()
        reaper.wait()
