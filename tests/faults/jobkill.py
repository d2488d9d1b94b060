"""SIGKILL a dataset job (``python -m overinterp backselect-dataset``) at seeded random
moments, resume it, and compare the result with an uninterrupted run of the same job.

The killed job runs in its own session (``start_new_session``) and is killed with
``os.killpg(…, SIGKILL)``, so any child dies too. The kills form one chain on one
output folder: each resume is itself killed, until ``kills`` kills have landed; a
last resume then runs to the end. Each kill's moment is drawn from a seeded RNG,
in one of three kinds:

* ``any``: uniformly over the process's expected lifetime (start-up included);
* ``compute``: uniformly over the expected remaining compute, counted from the
  moment this run has written its manifest;
* ``write``: the moment a temporary file of an atomic write (a shard, its commit
  record, the manifest) shows up (best effort: the write may finish before the kill lands).

Expected times come from the uninterrupted reference run. Import as ``faults.jobkill``.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobkit import write_dataset, write_model
from overinterp.jobs import job_status
from overinterp.jobs.shard import file_sha256

__all__ = ["JobKillReport", "job_command", "run_job_kills", "stray_files", "group_alive", "KINDS"]

KINDS = ("any", "compute", "write")
#: commit-record keys that depend on the run (time, process, host), not on the job
VOLATILE_RECORD_KEYS = ("seconds", "pid", "host", "finished")


@dataclass
class JobKillReport:
    """What one kill chain did and found."""

    kills: int = 0  # processes SIGKILLed while still running
    kinds: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    finished_before_kill: int = 0  # resumes that ended before their kill moment
    left_temporaries: int = 0  # kills after which a temporary of a write was left (for the resume to remove)
    shards: int = 0
    identical_shards: int = 0  # shard .pt files byte-equal to the uninterrupted run's
    manifest_equal: bool = False  # manifest equal but for its per-run entries
    records_equal: bool = False  # commit records equal but for time, pid and host
    stray: list[str] = field(default_factory=list)  # files left in the job folder after the last resume
    leftover_processes: int = 0  # process groups still alive after a kill or the last resume
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def survived(self) -> bool:
        """Every shard identical, manifest and records equal, nothing stray or alive, no problem."""
        return (
            self.shards > 0
            and self.identical_shards == self.shards
            and self.manifest_equal
            and self.records_equal
            and not self.stray
            and not self.leftover_processes
            and not self.problems
        )


def job_command(model: Path, data: Path, out: Path, shard_size: int) -> list[str]:
    """The CLI call of the job (exact backselect, one thread, no progress bar)."""
    return [
        sys.executable,
        "-m",
        "overinterp",
        "backselect-dataset",
        "--model",
        str(model),
        "--dataset",
        f"{data}:test",
        "--method",
        "exact",
        "--shard-size",
        str(shard_size),
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def group_alive(pgid: int) -> bool:
    """Whether any process of process group ``pgid`` is still alive."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_group_gone(pgid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stray_files(out: Path) -> list[str]:
    """Files of ``out`` that no finished job holds: temporaries (``.*.tmp``) and other hidden files."""
    found = []
    for folder in (out, out / "shards"):
        if folder.is_dir():
            found += [
                f"{folder.name}/{p.name}" for p in folder.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"
            ]
    return sorted(found)


def _runs(out: Path) -> int:
    try:
        return len(json.loads((out / "manifest.json").read_text())["runs"])
    except (OSError, ValueError, KeyError):
        return 0


def _has_temporary(out: Path) -> bool:
    """Whether a temporary of an atomic write (a shard, its record, the manifest) is in ``out``."""
    for folder in (out / "shards", out):
        try:
            with os.scandir(folder) as it:
                if any(e.name.endswith(".tmp") for e in it):
                    return True
        except FileNotFoundError:
            pass
    return False


def _hashes(out: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted((out / "shards").glob("*.pt"))}


def _records(out: Path) -> dict[str, dict[str, Any]]:
    recs = {}
    for p in sorted((out / "shards").glob("*.json")):
        r = json.loads(p.read_text())
        recs[p.name] = {k: v for k, v in r.items() if k not in VOLATILE_RECORD_KEYS}
    return recs


def _manifest_core(out: Path) -> dict[str, Any]:
    m = json.loads((out / "manifest.json").read_text())
    m.pop("runs", None)
    return m


def _reference(cmd: list[str], out: Path) -> tuple[float, float]:
    """Run the job uninterrupted; ``(start-up seconds until its manifest, total seconds)``."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    startup = None
    while proc.poll() is None:
        if startup is None and (out / "manifest.json").exists():
            startup = time.monotonic() - t0
        time.sleep(0.01)
    total = time.monotonic() - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"the reference job failed ({proc.returncode}): {err[-2000:]}")
    return startup if startup is not None else total, total


def run_job_kills(
    root: Path,
    *,
    kills: int = 5,
    seed: int = 0,
    images: int = 16,
    size: int = 8,
    shard_size: int = 2,
    kinds: tuple[str, ...] = KINDS,
) -> JobKillReport:
    """Build a tiny model and ``images`` random ``size``×``size`` images in ``root``, run the
    job once uninterrupted (``root/ref``) and once with ``kills`` SIGKILLs and resumes
    (``root/killed``); compare. The kill kinds take turns (``kinds``, from a seeded start)."""
    t_start = time.monotonic()
    rep = JobKillReport()
    rng = random.Random(seed)
    model = write_model(root / "model.pt")
    data = write_dataset(root / "images.npz", n=images, size=size, seed=seed)
    ref, out = root / "ref", root / "killed"
    startup, total = _reference(job_command(model, data, ref, shard_size), ref)
    compute = max(total - startup, 0.05)
    n_shards = -(-images // shard_size)
    cmd = job_command(model, data, out, shard_size)
    ref_hashes = _hashes(ref)
    complete_before = 0
    attempts = 0
    first = rng.randrange(len(kinds))
    while rep.kills < kills:
        attempts += 1
        if attempts > 4 * kills + 10:
            rep.problems.append(f"only {rep.kills} of {kills} kills landed in {attempts - 1} runs")
            break
        kind = kinds[(first + attempts - 1) % len(kinds)]
        left = compute * (n_shards - complete_before) / n_shards
        runs_before = _runs(out)
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        if kind == "any":
            moment = rng.uniform(0.0, startup + left)
            while proc.poll() is None and time.monotonic() - t0 < moment:
                time.sleep(0.002)
        elif kind == "compute":
            moment = rng.uniform(0.0, left)
            while proc.poll() is None and _runs(out) <= runs_before:
                time.sleep(0.005)
            t1 = time.monotonic()
            while proc.poll() is None and time.monotonic() - t1 < moment:
                time.sleep(0.002)
        elif kind == "write":
            while proc.poll() is None and not _has_temporary(out):
                time.sleep(0.0005)
        else:
            raise ValueError(f"unknown kill kind {kind!r}; known: {', '.join(KINDS)}")
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.wait() == -signal.SIGKILL:
            rep.kills += 1
            rep.kinds[kind] += 1
        else:
            rep.finished_before_kill += 1
            if proc.returncode != 0:
                rep.problems.append(f"a resume exited with {proc.returncode}")
        if not _wait_group_gone(proc.pid):
            rep.leftover_processes += 1
        if [s for s in stray_files(out) if s.endswith(".tmp")]:
            rep.left_temporaries += 1
        if (out / "manifest.json").exists():
            try:
                st = job_status(out)
            except Exception as exc:  # noqa: BLE001 - any failure to read the folder back is a finding
                rep.problems.append(f"job-status after kill {rep.kills}: {type(exc).__name__}: {exc}")
                continue
            if st["complete"] < complete_before:
                rep.problems.append(f"complete shards went down from {complete_before} to {st['complete']}")
            complete_before = st["complete"]
            # a committed shard is final: already byte-equal to the uninterrupted run's
            for name, sha in _hashes(out).items():
                if name in ref_hashes and sha != ref_hashes[name] and int(name[6:11]) not in st["missing"]:
                    rep.problems.append(f"{name} committed with other bytes after kill {rep.kills}")
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    _, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        rep.problems.append(f"the last resume exited with {proc.returncode}: {err.decode(errors='replace')[-500:]}")
    if not _wait_group_gone(proc.pid):
        rep.leftover_processes += 1
    got = _hashes(out)
    rep.shards = len(ref_hashes)
    rep.identical_shards = sum(got.get(k) == v for k, v in ref_hashes.items())
    if set(got) != set(ref_hashes):
        rep.problems.append(f"shard files differ: {sorted(set(got) ^ set(ref_hashes))}")
    rep.manifest_equal = (out / "manifest.json").exists() and _manifest_core(out) == _manifest_core(ref)
    rep.records_equal = _records(out) == _records(ref)
    rep.stray = stray_files(out)
    if rep.shards != n_shards:
        rep.problems.append(f"the reference run has {rep.shards} shards, expected {n_shards}")
    rep.seconds = time.monotonic() - t_start
    return rep
