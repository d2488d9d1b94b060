"""Dataset-scale backward selection: sharded, resumable, executor-agnostic.

``run_job(spec, out_dir)`` writes into ``out_dir``:

* ``manifest.json`` — format and version, the job's identity (model spec and
  fingerprint: a hash of its weights, preprocessing and baseline; dataset spec,
  positions and an images+labels fingerprint; method and parameters; feature
  grouping; baseline; dtype; shard size), the shard plan, and per run the
  runtime (device, threads, batch size, executor, software versions);
* ``shards/shard-NNNNN.pt`` + ``.json`` — see :mod:`overinterp.jobs.shard`.

One process writes into a job folder at a time: :func:`run_job` holds an OS lock
on ``job.lock`` (:func:`overinterp._locking.exclusive_lock`) from before it reads
the manifest until its last shard is in; a second writer is refused at once
with :class:`~overinterp.errors.LockHeldError` naming the holder's pid and host.
The kernel drops the lock of a killed holder, so the next run takes it over.
A rerun skips complete shards of this job and removes the temporaries a killed
write left (never a live writer's); a job killed at any moment (SIGKILL included) and rerun ends with
shard files byte-identical to an uninterrupted run's (same device and thread
count). A manifest from another model or other settings is refused, never
overwritten. Every shard carries the job's identity (in its commit record and
its payload) and is compared with the manifest's — also when the manifest was
deleted and is being rebuilt: a shard of another model, images, positions,
method, features, baseline or dtype stops the run (and :func:`job_status`,
:func:`load_job`) with :class:`ForeignShardError` naming the difference, before
anything is written; it is never adopted or overwritten. :func:`load_job` reads
the result back as one trace.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from overinterp._atomic import atomic_write_text
from overinterp._locking import exclusive_lock, held_by_a_live_process
from overinterp.jobs.executor import Executor, LocalExecutor
from overinterp.jobs.identity import data_fingerprint, describe_differences, job_identity, shard_identity
from overinterp.jobs.shard import (
    ForeignShardError,
    JobMismatchError,
    ShardResult,
    ShardTask,
    check_shard,
    load_job_inputs,
    remove_stale_temporaries,
    shard_paths,
)
from overinterp.jobs.spec import JobSpec
from overinterp.sis.trace import BackselectTrace, concat_traces

__all__ = [
    "run_job",
    "load_job",
    "JobOutput",
    "JobMismatchError",
    "ForeignShardError",
    "select_positions",
    "job_status",
    "MANIFEST",
]

MANIFEST = "manifest.json"
#: the job folder's lock file: held by the one process that writes into the folder
LOCK = "job.lock"
JOB_FORMAT = "overinterp-backselect-job"
JOB_VERSION = 1
#: the temporary of an interrupted manifest write (``atomic_write``'s naming)
MANIFEST_TEMP = re.compile(r"^\.manifest\.json\.[A-Za-z0-9_]{8}\.tmp$")


def select_positions(
    n: int, *, offset: int = 0, limit: int | None = None, sample: int | None = None, seed: int = 0
) -> list[int]:
    """Dataset positions to process: ``[offset, offset+limit)``, or a seeded random
    ``sample`` of that range (sorted)."""
    if offset < 0 or offset >= n:
        raise ValueError(f"offset {offset} outside the dataset's {n} images")
    stop = n if limit is None else min(n, offset + limit)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    positions = list(range(offset, stop))
    if sample is not None:
        if not 1 <= sample <= len(positions):
            raise ValueError(f"sample must be in 1..{len(positions)}, got {sample}")
        g = torch.Generator().manual_seed(seed)
        pick = torch.randperm(len(positions), generator=g)[:sample].sort().values
        positions = [positions[i] for i in pick.tolist()]
    return positions


def _software() -> dict[str, Any]:
    from overinterp import __version__

    return {"overinterp": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def _read_manifest(out: Path) -> dict[str, Any] | None:
    path = out / MANIFEST
    if not path.exists():
        return None
    try:
        m = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise JobMismatchError(f"{path} is not readable JSON ({exc}); move it away or choose another folder") from exc
    if m.get("format") != JOB_FORMAT:
        raise JobMismatchError(f"{path} is not an overinterp backselect-job manifest")
    if not isinstance(m.get("version"), int) or m["version"] > JOB_VERSION:
        raise JobMismatchError(
            f"{path} has job format version {m.get('version')!r}; this overinterp reads 1..{JOB_VERSION}"
        )
    return m


def _expected_shard(identity: dict[str, Any], shard: int) -> dict[str, Any]:
    """The identity shard ``shard`` of the job (``identity``: the manifest's) must carry; an image
    fingerprint a manifest did not record is not compared."""
    expected = shard_identity(identity, shard)
    if expected["data_fingerprint"] is None:
        del expected["data_fingerprint"]
    return expected


def _check_shards(out: Path, identity: dict[str, Any]) -> list[int]:
    """The shards still to compute; raises :class:`ForeignShardError` (naming
    each foreign shard, the first one's differences, and how to go on) when a
    shard in ``out`` was written for another identity."""
    missing: list[int] = []
    foreign: list[tuple[int, ForeignShardError]] = []
    for s in range(identity["num_shards"]):
        try:
            if check_shard(out, s, _expected_shard(identity, s)) is None:
                missing.append(s)
        except ForeignShardError as exc:
            foreign.append((s, exc))
    if len(foreign) == 1:
        raise foreign[0][1]
    if foreign:
        shown = [s for s, _ in foreign]
        raise ForeignShardError(
            f"{len(foreign)} shards in {out} were written for another job "
            f"({shown[:10]}{' …' if len(shown) > 10 else ''}); the first: "
            + getattr(foreign[0][1], "reason", str(foreign[0][1]))
            + f". Refusing to adopt or overwrite them. To go on, move their .pt and .json files out of "
            f"{out / 'shards'} (the job then recomputes them), or run this job into another folder"
        )
    return missing


def job_status(out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"shards", "complete", "missing": [...]}`` of the job in ``out_dir``.

    Raises:
        ForeignShardError: a shard there was written for another job identity.
    """
    out = Path(out_dir)
    m = _read_manifest(out)
    if m is None:
        raise FileNotFoundError(f"no job in {out} (no {MANIFEST})")
    n = m["identity"]["num_shards"]
    missing = _check_shards(out, m["identity"])
    return {"shards": n, "complete": n - len(missing), "missing": missing}


def run_job(
    spec: JobSpec,
    out_dir: str | os.PathLike[str],
    executor: Executor | None = None,
    *,
    progress: bool = True,
    log: Any = None,
) -> dict[str, Any]:
    """Run (or resume) the job; returns a summary dict (shards done/skipped, seconds, images/s).

    Raises:
        JobMismatchError: ``out_dir`` holds a job with another identity (nothing
            is overwritten; the message lists the differences).
        ForeignShardError: (a ``JobMismatchError``) a shard in ``out_dir`` was
            written for another identity — also when ``manifest.json`` was
            deleted; checked before anything is written, nothing is overwritten.
        LockHeldError: another live process is writing into ``out_dir`` (the
            message names its pid and host); nothing was touched.
    """
    executor = executor or LocalExecutor()
    out = Path(out_dir)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    model, data = load_job_inputs(spec)
    from overinterp.sis.methods import check_model_supports, method_from_description

    # a forward-only model and a gradient method: refused before any file is written
    check_model_supports(method_from_description(spec.method), model)
    identity = job_identity(spec, model, data)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        # one writer per job folder: held until the last shard is in (a killed holder's lock goes with it)
        with exclusive_lock(out / LOCK, wait=False, what=f"the job folder {out}"):
            return _run_locked(spec, out, executor, identity, progress=progress, log=log)
    finally:
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # refused before writing anything: leave no empty folder


def _run_locked(
    spec: JobSpec, out: Path, executor: Executor, identity: dict[str, Any], *, progress: bool, log: Any
) -> dict[str, Any]:
    """:func:`run_job` once it holds the job folder's lock."""
    existing = _read_manifest(out)
    threads = spec.threads or executor.describe().get("threads_per_task") or torch.get_num_threads()
    runtime = {
        "device": spec.device,
        "threads": threads,
        "batch_size": spec.batch_size,
        "executor": executor.describe(),
        **_software(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if existing is not None:
        diffs = describe_differences(existing["identity"], identity, ignore=("model_name",))  # a display name
        if diffs:
            raise JobMismatchError(
                f"{out} holds a job with other settings; refusing to mix shards. It was written for "
                + "; and for ".join(diffs[:8])
                + (" …" if len(diffs) > 8 else "")
                + ". Use another folder, or the settings recorded in "
                + str(out / MANIFEST)
            )
        manifest = existing
    # every shard already there must be this job's (also when the manifest was deleted): before writing anything
    pending = _check_shards(out, identity)
    if existing is None:
        manifest = {
            "format": JOB_FORMAT,
            "version": JOB_VERSION,
            "identity": identity,
            "shards": [
                {
                    "shard": s,
                    "file": str(shard_paths(".", s)[0]),
                    "positions": [spec.shard_size * s, spec.shard_size * s + len(spec.shard_positions(s))],
                }
                for s in range(spec.num_shards)
            ],
            "spec": spec.to_dict(),
            "runs": [],
        }
    manifest["runs"] = list(manifest.get("runs", [])) + [runtime]
    manifest["spec"] = spec.to_dict()
    # temporaries of writes killed before their rename (only this job's own naming; a live writer's are kept)
    stale = remove_stale_temporaries(out)
    for p in sorted(out.iterdir()):
        if MANIFEST_TEMP.match(p.name) and p.is_file() and not held_by_a_live_process(p):
            p.unlink(missing_ok=True)
            stale.append(p)
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")

    done_images = len(spec.positions) - sum(len(spec.shard_positions(s)) for s in pending)
    inner = progress and executor.shows_shard_progress
    tasks = [
        ShardTask(
            spec.to_dict(),
            s,
            str(out),
            shard_identity(identity, s),
            progress=inner,
            trust_code=spec.model.trust_code,
        )
        for s in pending
    ]
    say = log or (lambda msg: print(msg, file=sys.stderr))
    if stale:
        say(f"dataset job: removed {len(stale)} temporary file(s) of interrupted writes in {out}")
    say(
        f"dataset job: {len(spec.positions)} images of {spec.dataset} in {spec.num_shards} shards "
        f"({spec.num_shards - len(pending)} complete), model {identity['model_name']} "
        f"[{identity['model_fingerprint']}], method {spec.method['name']}, executor {executor.name} → {out}"
    )
    bar = tqdm(
        total=len(spec.positions),
        initial=done_images,
        desc="images",
        unit="img",
        disable=not progress,
        dynamic_ncols=True,
        position=0,
        smoothing=0.1,
    )
    computed: list[ShardResult] = []
    t0 = time.perf_counter()

    def on_result(r: ShardResult) -> None:
        computed.append(r)
        bar.update(r.images)

    try:
        executor.run(tasks, on_result)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    new_images = sum(r.images for r in computed if not r.skipped)
    status = job_status(out)
    return {
        "out": str(out),
        "shards": spec.num_shards,
        "computed": sum(not r.skipped for r in computed),
        "skipped": spec.num_shards - len(pending) + sum(r.skipped for r in computed),
        "complete": status["complete"],
        "seconds": round(seconds, 3),
        "images_per_second": round(new_images / seconds, 3) if seconds > 0 and new_images else None,
    }


@dataclass
class JobOutput:
    """A finished (or partial) job read back."""

    out_dir: Path
    manifest: dict[str, Any]
    spec: JobSpec
    trace: BackselectTrace
    positions: Tensor  # (N,) dataset positions, in trace order
    shards: list[int]

    @property
    def labels(self) -> Tensor:
        return self.trace.labels  # type: ignore[return-value]

    @property
    def model_name(self) -> str:
        return self.manifest["identity"]["model_name"]

    @property
    def classes(self) -> list[str] | None:
        return self.manifest["identity"].get("classes")

    def load_images(self) -> Tensor:
        """``(N, C, H, W)`` uint8 images of the trace, checked against the manifest's fingerprint."""
        from overinterp.data import open_dataset

        data = open_dataset(self.spec.dataset)
        images, labels = data.images[self.positions], data.labels[self.positions]
        if not torch.equal(labels, self.labels):
            raise ValueError(f"{self.spec.dataset} now has other labels at the job's positions than {self.out_dir}")
        if len(self.shards) == self.spec.num_shards:
            fp = data_fingerprint(images, labels)
            if fp != self.manifest["identity"]["data_fingerprint"]:
                raise ValueError(f"the images of {self.spec.dataset} changed since the job in {self.out_dir} ran")
        return images

    def load_model(self) -> torch.nn.Module:
        from overinterp.results import model_fingerprint

        model = self.spec.model.load()
        if model_fingerprint(model) != self.manifest["identity"]["model_fingerprint"]:
            raise ValueError(f"the model {self.spec.model} is not the one the job in {self.out_dir} used")
        return model


def load_job(out_dir: str | os.PathLike[str], *, allow_partial: bool = False, trust_code: bool = False) -> JobOutput:
    """Read the job in ``out_dir`` as one trace over its images (shards in order).

    Raises ``ValueError`` when shards are missing, unless ``allow_partial``. The manifest's model
    spec is untrusted: an ``import:`` model in it does not load (:meth:`JobOutput.load_model`)
    unless ``trust_code=True``.
    """
    out = Path(out_dir)
    manifest = _read_manifest(out)
    if manifest is None:
        raise FileNotFoundError(
            f"no backselect job in {out} (no {MANIFEST}); run `overinterp backselect-dataset` first"
        )
    spec = JobSpec.from_dict(manifest["spec"], trust_code=trust_code)
    status = job_status(out)
    if status["missing"] and not allow_partial:
        raise ValueError(
            f"{out}: {len(status['missing'])} of {status['shards']} shards are missing "
            f"(e.g. {status['missing'][:5]}); rerun the same command to finish the job"
        )
    shards = [s for s in range(status["shards"]) if s not in set(status["missing"])]
    if not shards:
        raise ValueError(f"{out}: no complete shard yet")
    traces = [BackselectTrace.load(shard_paths(out, s)[0]) for s in shards]
    positions = torch.tensor([p for s in shards for p in spec.shard_positions(s)])
    meta = {k: v for k, v in traces[0].meta.items() if k not in ("positions", "shard", "job_identity")}
    meta.update({"job": str(out), "shards": shards})
    trace = concat_traces(traces, meta=meta)
    return JobOutput(out, manifest, spec, trace, positions, shards)
