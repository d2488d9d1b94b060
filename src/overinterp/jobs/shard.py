"""One shard of a dataset job: the unit every executor runs (in any process).

:func:`run_shard` rebuilds the model and images from the job's spec (cached per
process), runs backward selection on the shard's images, and writes

* ``shards/shard-NNNNN.pt`` — a :class:`~overinterp.BackselectTrace` (float32
  log-odds, true labels, dataset positions and the shard's identity in
  ``meta``), atomically, in a canonical serialisation (:func:`save_canonical`):
  its bytes depend only on the spec and the runtime settings — never on the
  time, the process or the executor that wrote it — so a shard written twice,
  by the local executor or a Ray worker, is byte-identical;
* ``shards/shard-NNNNN.json`` — the commit record (sha256 of the ``.pt``, the
  shard's identity, seconds, device, threads, host), written after it.

A shard is complete when both exist and the hash matches; it belongs to a job
when the identity in its record *and* in its payload
(:func:`~overinterp.jobs.identity.shard_identity`: model and data fingerprints,
positions, method, features, baseline, dtype) equal the job's. :func:`check_shard` refuses a complete shard of another
identity with :class:`ForeignShardError` (never overwriting it). Shards written
before the identity was recorded ("legacy") are checked on what they hold
(model fingerprint, positions, method, dtype, feature type).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from overinterp._atomic import atomic_torch_save, atomic_write_text, file_sha256, seal
from overinterp._locking import held_by_a_live_process
from overinterp.jobs.identity import data_fingerprint, describe, differences, plain
from overinterp.jobs.spec import JobSpec

__all__ = [
    "ShardTask",
    "ShardResult",
    "run_shard",
    "provide_job_inputs",
    "shard_paths",
    "shard_complete",
    "file_sha256",
    "JobMismatchError",
    "ForeignShardError",
    "check_shard",
    "save_canonical",
    "remove_stale_temporaries",
]

SHARD_DIR = "shards"
#: the temporaries :func:`overinterp._atomic.atomic_write` makes for a shard's files
#: (``tempfile.mkstemp(prefix=".NAME.", suffix=".tmp")``: 8 random characters)
SHARD_TEMP = re.compile(r"^\.shard-\d{5,}\.(pt|json)\.[A-Za-z0-9_]{8}\.tmp$")


class JobMismatchError(ValueError):
    """The output folder holds a job (or shards) with another identity."""


class ForeignShardError(JobMismatchError):
    """A complete shard in the job folder was written for another job identity."""


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs, as plain data: the job spec, which shard, where
    to write, and the shard's identity (:func:`~overinterp.jobs.identity.shard_identity`
    of the job's): the fingerprints the worker's model and images must have."""

    spec: dict[str, Any]
    shard: int
    out_dir: str
    identity: dict[str, Any]
    progress: bool = False
    trust_code: bool = False  # the driver's model spec may run code (ModelSpec.trust_code); never from a file


@dataclass
class ShardResult:
    shard: int
    path: str
    sha256: str
    images: int
    seconds: float
    skipped: bool = False
    record: dict[str, Any] = field(default_factory=dict)


def shard_paths(out_dir: str | os.PathLike[str], shard: int) -> tuple[Path, Path]:
    """``(trace file, commit record)`` of ``shard``."""
    d = Path(out_dir) / SHARD_DIR
    return d / f"shard-{shard:05d}.pt", d / f"shard-{shard:05d}.json"


def shard_complete(out_dir: str | os.PathLike[str], shard: int) -> dict[str, Any] | None:
    """The commit record of a complete shard (both files, hash matches), else ``None``.

    Says nothing about *whose* shard it is: see :func:`check_shard`."""
    pt, rec = shard_paths(out_dir, shard)
    if not (pt.is_file() and rec.is_file()):
        return None
    try:
        record = json.loads(rec.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("sha256") == file_sha256(pt) else None


# --------------------------------------------------------------------------- identity


def _legacy_payload_identity(d: dict[str, Any]) -> dict[str, Any] | None:
    """What a shard written before identities were recorded holds of one
    (``None``: not a job's shard at all)."""
    meta = d.get("meta") or {}
    if not isinstance(meta, dict) or "model_fingerprint" not in meta or "positions" not in meta:
        return None
    found: dict[str, Any] = {k: meta[k] for k in ("shard", "model_fingerprint", "positions", "dtype") if k in meta}
    if d.get("method") is not None:
        found["method"] = d["method"]
    found["features"] = {"type": "pixels" if d.get("features") is None else "patches"}
    return found


def _load_payload(data: bytes) -> dict[str, Any] | None:
    try:
        d = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - unreadable: not a shard of anyone's
        return None
    return d if isinstance(d, dict) else None


def _refuse(out_dir: Any, shard: int, reason: str) -> ForeignShardError:
    pt, rec = shard_paths(out_dir, shard)
    exc = ForeignShardError(
        f"shard {shard} was written for {reason}. Refusing to adopt or overwrite it "
        f"({pt}). To go on, move {pt.name} and {rec.name} out of {pt.parent} (the job then recomputes "
        "that shard), or run this job into another folder"
    )
    exc.reason = f"shard {shard} was written for {reason}"  # type: ignore[attr-defined]
    return exc


def check_shard(out_dir: str | os.PathLike[str], shard: int, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The commit record of ``shard`` when it is complete and this job's
    (``expected``: :func:`~overinterp.jobs.identity.shard_identity`; keys it lacks are not compared);
    ``None`` when it is missing or incomplete (to be computed).

    Both the identity in the commit record and the one in the payload's
    ``meta["job_identity"]`` are compared; a legacy shard (no identity recorded)
    on its ``meta`` model fingerprint, positions and dtype, its method and its
    feature type.

    Raises:
        ForeignShardError: the shard — complete, or a readable trace without a
            valid record — was written for another identity. The message names
            each difference ("shard 3 was written for model 1a2b…, this job's
            model is 9f8e…") and how to go on.
    """
    from overinterp.sis.trace import TRACE_FORMAT

    pt, rec = shard_paths(out_dir, shard)
    if not pt.is_file():
        return None
    data = pt.read_bytes()
    record: Any = None
    if rec.is_file():
        try:
            record = json.loads(rec.read_text())
        except (OSError, json.JSONDecodeError):
            record = None
    complete = isinstance(record, dict) and record.get("sha256") == hashlib.sha256(data).hexdigest()
    payload = _load_payload(data)
    if payload is None or payload.get("format") != TRACE_FORMAT:
        if complete:
            raise _refuse(out_dir, shard, "nothing this job knows: its committed file is not a backselect trace")
        return None  # an unreadable leftover: computed again
    meta = payload.get("meta") if isinstance(payload.get("meta"), dict) else {}
    found = (
        meta.get("job_identity") if isinstance(meta.get("job_identity"), dict) else _legacy_payload_identity(payload)
    )
    if found is None:
        if complete:
            raise _refuse(out_dir, shard, "no job: its trace records no model fingerprint or positions")
        return None
    from overinterp.sis.methods import method_from_description

    try:  # legacy traces hold the method as the worker rebuilt and described it
        alternatives = {"method": [plain(method_from_description(expected["method"]).describe())]}
    except Exception:  # noqa: BLE001
        alternatives = {}
    diffs = {d.key: (d, "payload") for d in differences(found, expected, common_only=True, alternatives=alternatives)}
    if complete and isinstance(record.get("identity"), dict):
        for d in differences(record["identity"], expected, common_only=True):
            diffs[d.key] = (d, "payload and commit record" if d.key in diffs else "commit record")
    if diffs:
        where = "" if complete else "; it has no valid commit record"
        raise _refuse(
            out_dir, shard, "; and for ".join(f"{describe(d)} ({src})" for d, src in list(diffs.values())[:6]) + where
        )
    return record if complete else None


# --------------------------------------------------------------------------- files


def _canonical(v: Any) -> Any:
    """A copy of ``v`` whose pickle depends only on its value: equal strings are one
    (interned) object, every container and tensor is fresh (no shared storage, no
    views), dict keys are sorted, tuples are lists. Without this, pickle's memo
    makes the bytes depend on object identity — e.g. a spec string that arrived
    through Ray's object store is not the interned literal a local run shares."""
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().contiguous().clone()
    if isinstance(v, dict):
        return {(sys.intern(k) if isinstance(k, str) else k): _canonical(v[k]) for k in sorted(v, key=str)}
    if isinstance(v, (list, tuple)):
        return [_canonical(x) for x in v]
    if isinstance(v, str):
        return sys.intern(str(v))
    return v


def save_canonical(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """``torch.save`` of :func:`_canonical` ``(obj)``, atomically."""
    return atomic_torch_save(_canonical(obj), path)


def remove_stale_temporaries(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries killed writes left in ``shards/`` (only names of
    this module's own pattern, :data:`SHARD_TEMP`); returns what was removed.

    Run by the driver, holding the job folder's lock, before any task starts. A
    temporary that a live process is still writing (a worker of a killed driver:
    :func:`~overinterp._atomic.atomic_write` locks its temporary while it
    writes) is kept."""
    d = Path(out_dir) / SHARD_DIR
    removed = []
    if d.is_dir():
        for p in sorted(d.iterdir()):
            if SHARD_TEMP.match(p.name) and p.is_file() and not held_by_a_live_process(p):
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed


# --------------------------------------------------------------------------- worker

_CACHE: dict[str, Any] = {}


def _cached(kind: str, key: str, build):
    full = f"{kind}:{key}"
    if full not in _CACHE:
        # one model and one dataset per process: drop older entries of the same kind
        for k in [k for k in _CACHE if k.startswith(kind + ":")]:
            del _CACHE[k]
        _CACHE[full] = build()
    return _CACHE[full]


def provide_job_inputs(spec: JobSpec, model: Any = None, data: Any = None) -> None:
    """Use an already opened ``model`` and/or ``data`` (:class:`~overinterp.data.LabeledImages`)
    for ``spec`` in this process's shards (instead of loading the spec's files again, or for a
    module that lives only in this process: the audit of an ``nn.Module``). Local executors only."""
    if model is not None:
        _CACHE.pop(next((k for k in _CACHE if k.startswith("model:")), ""), None)
        _CACHE["model:" + json.dumps(spec.model.to_dict(), sort_keys=True)] = model
    if data is not None:
        _CACHE.pop(next((k for k in _CACHE if k.startswith("data:")), ""), None)
        _CACHE["data:" + spec.dataset] = data


def load_job_inputs(spec: JobSpec):
    """``(model, dataset)`` of ``spec``, cached in this process."""
    from overinterp.data import open_dataset

    spec.model.check_trusted()  # before the cache: a trusted build of the same spec is no licence
    model = _cached("model", json.dumps(spec.model.to_dict(), sort_keys=True), spec.model.load)
    data = _cached("data", spec.dataset, lambda: open_dataset(spec.dataset, progress=False))
    return model, data


def run_shard(task: ShardTask) -> ShardResult:
    """Compute and write one shard (skips it when already complete and this job's).

    Raises:
        ForeignShardError: a complete shard of another identity is in its place
            (it is left as it is).
    """
    from overinterp import backselect
    from overinterp.results import model_fingerprint
    from overinterp.sis.features import patch_features
    from overinterp.sis.methods import method_from_description

    pt, rec = shard_paths(task.out_dir, task.shard)
    spec = JobSpec.from_dict(task.spec, trust_code=task.trust_code)
    positions = list(spec.shard_positions(task.shard))
    if spec.threads:
        torch.set_num_threads(spec.threads)
    t0 = time.perf_counter()
    model, data = load_job_inputs(spec)
    fp = model_fingerprint(model)
    if fp != task.identity["model_fingerprint"]:
        raise RuntimeError(
            f"worker built model {fp}, but the job is for model {task.identity['model_fingerprint']}: "
            f"the checkpoint at {spec.model.checkpoint} differs on this machine"
        )
    idx = torch.tensor(positions)
    images_u8, labels = data.images[idx], data.labels[idx]
    dfp = data_fingerprint(images_u8, labels)
    expected = task.identity.get("data_fingerprint")
    if expected is not None and dfp != expected:
        raise RuntimeError(
            f"shard {task.shard}: the images of {spec.dataset} differ on this worker "
            f"(fingerprint {dfp}, job expects {expected})"
        )
    identity = plain({**task.identity, "data_fingerprint": dfp})
    done = check_shard(task.out_dir, task.shard, identity)
    if done is not None:
        return ShardResult(task.shard, str(pt), done["sha256"], len(positions), 0.0, skipped=True, record=done)
    device = torch.device(spec.device)
    dtype = getattr(torch, spec.dtype)
    if device.type != "cpu" or dtype != torch.float32:
        # a moved copy, cached apart: the cached CPU float32 model keeps its fingerprint
        base = model
        model = _cached(
            "model-on-device", f"{fp}|{device}|{dtype}", lambda: copy.deepcopy(base).to(device=device, dtype=dtype)
        )
    images = images_u8.to(device=device, dtype=dtype) / 255.0
    h, w = images.shape[-2:]
    features = None if spec.patch == 1 else patch_features(h, w, spec.patch)
    method = method_from_description(spec.method)
    kwargs: dict[str, Any] = {}
    if spec.batch_size:
        kwargs["batch_size"] = spec.batch_size
    trace = backselect(
        model,
        images,
        method=method,
        features=features,
        progress=task.progress,
        labels=labels if bool((labels >= 0).all()) else None,  # unlabelled images (-1): no labels in the trace
        mask_value=None if spec.mask_value is None else torch.tensor(spec.mask_value),
        **kwargs,
    )
    trace.meta.pop("created", None)  # shard bytes must not depend on the time
    trace.meta.update(
        {
            "job_dataset": spec.dataset,
            "positions": positions,
            "shard": task.shard,
            "model_fingerprint": fp,
            "job_identity": identity,
        }
    )
    save_canonical(seal(trace.to_dict()), pt)
    seconds = time.perf_counter() - t0
    sha = file_sha256(pt)
    record = {
        "shard": task.shard,
        "sha256": sha,
        "identity": identity,
        "images": len(positions),
        "seconds": round(seconds, 3),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": spec.batch_size,
        "dataset": spec.dataset,
        "checkpoint": spec.model.checkpoint,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_text(rec, json.dumps(record, indent=1) + "\n")
    return ShardResult(task.shard, str(pt), sha, len(positions), seconds, record=record)
