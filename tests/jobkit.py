"""Small, fast inputs for dataset-job tests: a tiny CNN checkpoint and an 8×8 npz dataset; and the
job faults that tests/jobs and bench/faults.py share (a second writer on a job folder, a Ray driver
SIGKILLed during start-up)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import overinterp
from overinterp.jobs import JobSpec, ModelSpec

CLASSES = ["a", "b", "c"]


def write_model(path: Path, seed: int = 0, width: int = 4) -> Path:
    """An overinterp checkpoint of a random ``smallcnn`` (3 classes, CIFAR-10 preprocessing)."""
    torch.manual_seed(seed)
    model = overinterp.create_model("smallcnn", num_classes=3, preprocessing="cifar10", width=width).eval()
    overinterp.save_checkpoint(path, model, "smallcnn", arch_kwargs={"width": width}, num_classes=3)
    return path


def write_dataset(path: Path, n: int = 12, size: int = 8, seed: int = 0, prefix: str = "test") -> Path:
    """A uint8 npz with ``{prefix}_images`` (N, H, W, 3), ``{prefix}_labels`` and ``classes``."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    labels = rng.integers(0, len(CLASSES), size=n).astype(np.uint8)
    np.savez(path, **{f"{prefix}_images": images, f"{prefix}_labels": labels, "classes": np.array(CLASSES)})
    return path


def make_spec(
    model: Path, data: Path, n: int = 12, method=None, shard_size: int = 4, prefix: str = "test", **kw
) -> JobSpec:
    method = method or overinterp.Exact()
    return JobSpec(
        model=ModelSpec(checkpoint=str(model)),
        dataset=f"{data}:{prefix}",
        positions=tuple(range(n)),
        method=method.describe(),
        shard_size=shard_size,
        threads=1,
        **kw,
    )


# --------------------------------------------------------------------------- faults (tests/jobs, bench/faults.py)

#: a job whose first shard write stops half-way (its temporary written, not yet renamed) until
#: ``gate`` exists — a live writer caught mid-shard, holding the folder's lock
PAUSED_WRITER = """
import json, sys, time
from pathlib import Path
import overinterp.jobs.shard as shard
from overinterp._atomic import atomic_write
from overinterp.jobs import JobSpec, run_job

out, ready, gate, spec = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
calls = []

def paused_save(obj, path, **kw):
    with atomic_write(path, "wb") as fh:
        shard.torch.save(obj, fh)
        fh.flush()
        if not calls:
            calls.append(path)
            ready.write_text("mid-write")
            while not gate.exists():
                time.sleep(0.02)
    return Path(path)

shard.atomic_torch_save = paused_save
run_job(JobSpec.from_dict(json.loads(spec)), out, progress=False, log=lambda _: None)
print("writer done")
"""


def start_paused_writer(spec: JobSpec, out: Path, scratch: Path) -> tuple[subprocess.Popen, Path]:
    """Start :data:`PAUSED_WRITER` on ``spec`` into ``out``; return once it is mid-write of its first
    shard (its process, and the file whose creation lets it go on)."""
    ready, gate = scratch / "ready", scratch / "gate"
    proc = subprocess.Popen(
        [sys.executable, "-c", PAUSED_WRITER, str(out), str(ready), str(gate), json.dumps(spec.to_dict())],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not ready.exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise AssertionError(f"the writer did not reach its first shard write: {proc.communicate()}")
        time.sleep(0.05)
    return proc, gate


def temporaries(out: Path) -> list[str]:
    """Names of the shard temporaries in ``out``."""
    from overinterp.jobs.shard import SHARD_TEMP

    return sorted(p.name for p in (out / "shards").iterdir() if SHARD_TEMP.match(p.name))


@dataclass
class SecondWriter:
    """How a second ``backselect-dataset`` on a folder another process writes went."""

    holder_pid: int
    second_exit: int
    second_stderr: str
    live_temporaries_kept: bool
    second_wrote_nothing: bool
    first_exit: int
    first_stderr: str
    complete: bool
    files_after: list[str]
    seconds: float


def second_writer(scratch: Path) -> SecondWriter:
    """Start a job that pauses mid-write of shard 0, run the same job from the command line into the
    same folder, then let the first go on (tiny model and data in ``scratch``)."""
    from overinterp import KStep
    from overinterp.jobs import job_status, shard_paths

    t0 = time.monotonic()
    model, data = write_model(scratch / "m.pt"), write_dataset(scratch / "d.npz")
    spec, out = make_spec(model, data, method=KStep(16)), scratch / "job"
    holder, gate = start_paused_writer(spec, out, scratch)
    try:
        live = temporaries(out)
        cmd = [sys.executable, "-m", "overinterp", "backselect-dataset", "--model", str(model)]
        cmd += ["--dataset", f"{data}:test", "--method", "kstep", "--k", "16", "--shard-size", "4"]
        cmd += ["--threads", "1", "--no-progress", "--out", str(out)]
        second = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ})
        kept = bool(live) and temporaries(out) == live
        nothing = not shard_paths(out, 1)[0].exists()
    finally:
        gate.write_text("go")
        _, stderr = holder.communicate(timeout=300)
    return SecondWriter(
        holder.pid,
        second.returncode,
        second.stderr,
        kept,
        nothing,
        holder.returncode,
        stderr,
        job_status(out)["missing"] == [],
        sorted(p.name for p in out.iterdir()),
        time.monotonic() - t0,
    )


#: a Ray driver: says when it is about to start Ray and when ``ray.init`` returned, then waits in a task
RAY_DRIVER = """
import sys, time
import ray
from overinterp.jobs import get_executor

real_init = ray.init
def init(*a, **k):
    out = real_init(*a, **k)
    print("init done", flush=True)
    return out
ray.init = init

def wait(x):
    time.sleep(120)
    return x

executor = get_executor("ray", num_cpus=1, max_retries=0, init_kwargs=dict(
    num_cpus=1, object_store_memory=80 * 2**20, configure_logging=False, _temp_dir=sys.argv[1]))
print("starting ray", flush=True)
executor.map(wait, [0], print)
"""


def _processes_of(mark: str, temp_dir: str) -> dict[int, str]:
    """Live processes (no zombies) a driver started: its environment marker, or Ray's temp folder on
    their command line (two independent signs); pid → command."""
    needle, found = f"\0TEST_DRIVER_MARK={mark}\0".encode(), {}
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            env = b"\0" + Path(f"/proc/{d}/environ").read_bytes() + b"\0"
            cmd = Path(f"/proc/{d}/cmdline").read_bytes()
            stat = Path(f"/proc/{d}/stat").read_bytes()
        except OSError:
            continue
        if stat[stat.rindex(b")") + 2 :].split()[0] == b"Z":
            continue
        if needle in env or temp_dir.encode() in cmd:
            found[int(d)] = cmd.replace(b"\0", b" ").decode(errors="replace")[:80]
    return found


def kill_ray_driver_after(delay: float, wait: float = 20.0) -> dict[str, Any]:
    """Start :data:`RAY_DRIVER`, SIGKILL it ``delay`` s after it starts Ray, and watch for ``wait`` s
    what it leaves: ``{"delay", "ray_processes_at_kill", "in_start_up", "seconds_to_clean", "left"}``."""
    mark = uuid.uuid4().hex
    temp_dir = tempfile.mkdtemp(prefix="rr", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env |= {"OMP_NUM_THREADS": "1", "TEST_DRIVER_MARK": mark}
    driver = subprocess.Popen(
        [sys.executable, "-c", RAY_DRIVER, temp_dir],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert driver.stdout is not None
        for line in driver.stdout:
            lines.append((time.monotonic(), line.strip()))

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while not any(text == "starting ray" for _, text in lines):
            if driver.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the driver did not start: {lines}")
            time.sleep(0.01)
        started = next(t for t, text in lines if text == "starting ray")
        time.sleep(max(0.0, started + delay - time.monotonic()))
        running = _processes_of(mark, temp_dir)
        in_start_up = not any(text == "init done" for _, text in lines)
        os.kill(driver.pid, signal.SIGKILL)
        killed = time.monotonic()
        driver.wait()
        left = _processes_of(mark, temp_dir)
        while left and time.monotonic() - killed < wait:
            time.sleep(0.1)
            left = _processes_of(mark, temp_dir)
        return {
            "delay": delay,
            "ray_processes_at_kill": len(running),
            "in_start_up": in_start_up,
            "seconds_to_clean": round(time.monotonic() - killed, 2),
            "left": left,
        }
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in _processes_of(mark, temp_dir):  # never leak what was started here
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        shutil.rmtree(temp_dir, ignore_errors=True)
