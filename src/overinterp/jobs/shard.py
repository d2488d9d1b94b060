"""One shard of a dataset job: the unit every executor runs (in any process).

:func:`run_shard` rebuilds the model and images from the job's spec (cached per
process), runs backward selection on the shard's images, and writes

* ``shards/shard-NNNNN.pt`` — a :class:`~overinterp.BackselectTrace` (float32
  log-odds, true labels, dataset positions in ``meta``), atomically; its bytes
  depend only on the spec and the runtime settings, never on the time, so a
  shard written twice is identical;
* ``shards/shard-NNNNN.json`` — the commit record (sha256 of the ``.pt``,
  seconds, device, threads, host), written after it. A shard is complete when
  both exist and the hash matches.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from overinterp._atomic import atomic_write_text
from overinterp.jobs.spec import JobSpec, images_fingerprint

__all__ = ["ShardTask", "ShardResult", "run_shard", "shard_paths", "shard_complete", "file_sha256"]

SHARD_DIR = "shards"


@dataclass(frozen=True)
class ShardTask:
    """Everything a worker needs, as plain data: the job spec, which shard, where
    to write, and the fingerprints the worker's model and images must have."""

    spec: dict[str, Any]
    shard: int
    out_dir: str
    model_fingerprint: str
    data_fingerprint: str  # of this shard's images and labels
    progress: bool = False


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


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shard_complete(out_dir: str | os.PathLike[str], shard: int) -> dict[str, Any] | None:
    """The commit record of a complete shard, else ``None``."""
    pt, rec = shard_paths(out_dir, shard)
    if not (pt.is_file() and rec.is_file()):
        return None
    try:
        record = json.loads(rec.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return record if record.get("sha256") == file_sha256(pt) else None


_CACHE: dict[str, Any] = {}


def _cached(kind: str, key: str, build):
    full = f"{kind}:{key}"
    if full not in _CACHE:
        # one model and one dataset per process: drop older entries of the same kind
        for k in [k for k in _CACHE if k.startswith(kind + ":")]:
            del _CACHE[k]
        _CACHE[full] = build()
    return _CACHE[full]


def load_job_inputs(spec: JobSpec):
    """``(model, dataset)`` of ``spec``, cached in this process."""
    from overinterp.data import open_dataset

    model = _cached("model", json.dumps(spec.model.to_dict(), sort_keys=True), spec.model.load)
    data = _cached("data", spec.dataset, lambda: open_dataset(spec.dataset, progress=False))
    return model, data


def run_shard(task: ShardTask) -> ShardResult:
    """Compute and write one shard (skips it when already complete)."""
    from overinterp import backselect
    from overinterp.sis.features import patch_features
    from overinterp.sis.methods import method_from_description
    from overinterp.results import model_fingerprint

    done = shard_complete(task.out_dir, task.shard)
    pt, rec = shard_paths(task.out_dir, task.shard)
    spec = JobSpec.from_dict(task.spec)
    positions = list(spec.shard_positions(task.shard))
    if done is not None:
        return ShardResult(task.shard, str(pt), done["sha256"], len(positions), 0.0, skipped=True, record=done)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    t0 = time.perf_counter()
    model, data = load_job_inputs(spec)
    fp = model_fingerprint(model)
    if fp != task.model_fingerprint:
        raise RuntimeError(f"worker built model {fp}, but the job is for model {task.model_fingerprint}: "
                           f"the checkpoint at {spec.model.checkpoint} differs on this machine")
    idx = torch.tensor(positions)
    images_u8, labels = data.images[idx], data.labels[idx]
    dfp = images_fingerprint(images_u8, labels)
    expected = task.data_fingerprint
    if dfp != expected:
        raise RuntimeError(f"shard {task.shard}: the images of {spec.dataset} differ on this worker "
                           f"(fingerprint {dfp}, job expects {expected})")
    device = torch.device(spec.device)
    dtype = getattr(torch, spec.dtype)
    if device.type != "cpu" or dtype != torch.float32:
        # a moved copy, cached apart: the cached CPU float32 model keeps its fingerprint
        base = model
        model = _cached("model-on-device", f"{fp}|{device}|{dtype}",
                        lambda: copy.deepcopy(base).to(device=device, dtype=dtype))
    images = images_u8.to(device=device, dtype=dtype) / 255.0
    h, w = images.shape[-2:]
    features = None if spec.patch == 1 else patch_features(h, w, spec.patch)
    method = method_from_description(spec.method)
    kwargs: dict[str, Any] = {}
    if spec.batch_size:
        kwargs["batch_size"] = spec.batch_size
    trace = backselect(model, images, method=method, features=features, progress=task.progress,
                       labels=labels, mask_value=None if spec.mask_value is None else torch.tensor(spec.mask_value),
                       **kwargs)
    trace.meta.pop("created", None)  # shard bytes must not depend on the time
    trace.meta.update({"job_dataset": spec.dataset, "positions": positions, "shard": task.shard,
                       "model_fingerprint": fp})
    trace.save(pt)
    seconds = time.perf_counter() - t0
    sha = file_sha256(pt)
    record = {"shard": task.shard, "sha256": sha, "images": len(positions), "seconds": round(seconds, 3),
              "device": str(device), "threads": torch.get_num_threads(), "batch_size": spec.batch_size,
              "dataset": spec.dataset, "checkpoint": spec.model.checkpoint, "host": socket.gethostname(),
              "pid": os.getpid(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(rec, json.dumps(record, indent=1) + "\n")
    return ShardResult(task.shard, str(pt), sha, len(positions), seconds, record=record)
