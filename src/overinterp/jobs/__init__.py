"""Dataset-scale jobs: sharded, resumable backward selection over a whole dataset,
scheduled through an :class:`Executor` (local here; Ray with ``overinterp[ray]``)."""

from overinterp.errors import LockHeldError
from overinterp.jobs.executor import Executor, LocalExecutor
from overinterp.jobs.executors import get_executor, list_executors, register_executor
from overinterp.jobs.identity import data_fingerprint, job_identity, shard_identity
from overinterp.jobs.job import (
    ForeignShardError,
    JobMismatchError,
    JobOutput,
    job_status,
    load_job,
    run_job,
    select_positions,
)
from overinterp.jobs.shard import ShardResult, ShardTask, check_shard, run_shard, shard_complete, shard_paths
from overinterp.jobs.spec import JobSpec, ModelSpec

__all__ = [
    "Executor",
    "LocalExecutor",
    "get_executor",
    "list_executors",
    "register_executor",
    "ForeignShardError",
    "LockHeldError",
    "JobMismatchError",
    "JobOutput",
    "job_status",
    "load_job",
    "run_job",
    "select_positions",
    "ShardResult",
    "ShardTask",
    "run_shard",
    "check_shard",
    "shard_complete",
    "shard_paths",
    "JobSpec",
    "ModelSpec",
    "data_fingerprint",
    "job_identity",
    "shard_identity",
]
