"""Benchmark: one backselect-dataset job on the local executor and on a local Ray
cluster, side by side, plus a worker-kill run and a Ctrl-C of the CLI.

1. local executor, torch threads 1: wall time, per-shard compute time;
2. Ray, a local cluster of ``--cpus`` CPUs (one CPU and one thread per task):
   cluster start-up, wall time, overhead per task — both as the round trip of
   an empty task and as job-level (slots × wall − Σ shard seconds) / shards —
   and whether every shard's sha256 equals the local one;
3. the same job on Ray where shard 1's first attempt writes its trace, loses
   its commit record and SIGKILLs its worker: wall time, retry outcome, hashes;
4. ``overinterp backselect-dataset --executor ray`` in a subprocess, SIGINT
   once a shard is complete: exit code, shards left, leftover files/raylets.

The model is a small CNN with random weights and the images random uint8, so
that it runs anywhere in well under three minutes; per-shard seconds scale with
the model's forward cost, Ray's per-task overhead does not.

Usage:  .venv/bin/python bench/ray_executor.py [--images 48] [--shard-size 4] [--size 16] [--cpus 2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from overinterp import KStep, create_model, save_checkpoint
from overinterp.jobs import JobSpec, ModelSpec, get_executor, job_status, run_job, run_shard, shard_paths
from overinterp.jobs.shard import file_sha256, shard_complete


def crash_after_trace_once(task):
    """Shard 1, first attempt: trace written, commit record lost, worker SIGKILLed."""
    result = run_shard(task)
    marker = Path(task.out_dir) / f"killed-{task.shard}.pid"
    if task.shard == 1 and not marker.exists():
        marker.write_text(str(os.getpid()))
        shard_paths(task.out_dir, task.shard)[1].unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    return result


def noop(x: int) -> int:
    return x


def hashes(out: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted((out / "shards").glob("shard-*.pt"))}


def shard_seconds(out: Path, n: int) -> list[float]:
    return [json.loads(shard_paths(out, s)[1].read_text())["seconds"] for s in range(n)]


def leftovers(out: Path) -> list[str]:
    """Files in ``shards/`` that are not part of a complete shard (partial traces, records, temporaries)."""
    folder = out / "shards"
    bad = []
    for path in sorted(folder.iterdir()) if folder.exists() else []:
        stem = path.name.split(".")[0]
        if not stem.startswith("shard-") or shard_complete(out, int(stem[len("shard-") :])) is None:
            bad.append(path.name)
    return bad


def raylets() -> int:
    out = subprocess.run(["pgrep", "-c", "raylet"], capture_output=True, text=True)
    return int(out.stdout.strip() or 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--shard-size", type=int, default=4)
    ap.add_argument("--size", type=int, default=16, help="image side (pixels); features = size²")
    ap.add_argument("--k", type=int, default=16, help="KStep features per step")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    args = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        tmp / "cnn.pt", create_model("smallcnn", num_classes=10, preprocessing="cifar10", width=8), "smallcnn"
    )
    rng = np.random.default_rng(0)
    npz = tmp / "images.npz"
    np.savez(
        npz,
        images=rng.integers(0, 256, (args.images, args.size, args.size, 3), dtype=np.uint8),
        labels=rng.integers(0, 10, args.images),
    )
    spec = JobSpec(
        model=ModelSpec(checkpoint=str(ckpt)),
        dataset=str(npz),
        positions=tuple(range(args.images)),
        method=KStep(k=args.k).describe(),
        shard_size=args.shard_size,
        threads=1,
    )
    n = spec.num_shards
    quiet = dict(progress=False, log=lambda _: None)
    rows: dict[str, dict[str, object]] = {}
    print(
        f"job: {args.images} images {args.size}×{args.size}, {n} shards of {args.shard_size}, KStep(k={args.k}), "
        f"smallcnn width 8, torch threads 1; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs",
        flush=True,
    )

    # 1. local
    t0 = time.perf_counter()
    run_job(spec, tmp / "local", get_executor("local"), **quiet)
    local_wall = time.perf_counter() - t0
    local_sec = shard_seconds(tmp / "local", n)
    rows["local"] = {
        "wall_s": round(local_wall, 2),
        "sum_shard_s": round(sum(local_sec), 2),
        "mean_shard_s": round(sum(local_sec) / n, 3),
    }

    # 2. Ray
    import ray

    t0 = time.perf_counter()
    ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    startup = time.perf_counter() - t0
    try:
        ex = get_executor("ray", num_cpus=1, max_retries=2)
        ex.map(noop, list(range(2 * args.cpus)), lambda _: None)  # start the workers
        t0 = time.perf_counter()
        trips = 20
        for i in range(trips):
            ex.map(noop, [i], lambda _: None)
        roundtrip = (time.perf_counter() - t0) / trips
        t0 = time.perf_counter()
        run_job(spec, tmp / "ray", ex, **quiet)
        ray_wall = time.perf_counter() - t0
        ray_sec = shard_seconds(tmp / "ray", n)
        rows["ray"] = {
            "wall_s": round(ray_wall, 2),
            "sum_shard_s": round(sum(ray_sec), 2),
            "mean_shard_s": round(sum(ray_sec) / n, 3),
            "cluster_start_s": round(startup, 2),
            "empty_task_roundtrip_ms": round(1000 * roundtrip, 1),
            "job_overhead_per_task_s": round((args.cpus * ray_wall - sum(ray_sec)) / n, 3),
            "speedup_vs_local": round(local_wall / ray_wall, 2),
            "same_sha256_as_local": hashes(tmp / "ray") == hashes(tmp / "local"),
        }

        # 3. a worker killed mid-job
        ex_fault = get_executor("ray", num_cpus=1, max_retries=2, task_fn=crash_after_trace_once)
        t0 = time.perf_counter()
        summary = run_job(spec, tmp / "fault", ex_fault, **quiet)
        fault_wall = time.perf_counter() - t0
        killed = int((tmp / "fault" / "killed-1.pid").read_text())
        redo = json.loads(shard_paths(tmp / "fault", 1)[1].read_text())
        rows["ray+kill"] = {
            "wall_s": round(fault_wall, 2),
            "worker_killed": True,
            "shard1_redone_by_other_pid": redo["pid"] != killed,
            "complete": f"{summary['complete']}/{n}",
            "missing": job_status(tmp / "fault")["missing"],
            "leftover_files": leftovers(tmp / "fault"),
            "same_sha256_as_local": hashes(tmp / "fault") == hashes(tmp / "local"),
        }
    finally:
        ray.shutdown()

    # 4. Ctrl-C on the CLI driver (its own local Ray cluster)
    out = tmp / "ctrlc"
    cmd = [
        sys.executable,
        "-m",
        "overinterp",
        "backselect-dataset",
        "--model",
        str(ckpt),
        "--dataset",
        str(npz),
        "--method",
        "kstep",
        "--k",
        str(args.k),
        "--shard-size",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
        "--executor",
        "ray",
        "--no-progress",
    ]
    with open(tmp / "ctrlc.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    t0 = time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t0 < 120:
        if (out / "manifest.json").exists() and job_status(out)["complete"] > 0:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    t_int = time.perf_counter()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
    stopped = time.perf_counter() - t_int
    time.sleep(2)
    st = job_status(out)
    rows["cli ctrl-c"] = {
        "exit_code": proc.returncode,
        "stopped_after_s": round(stopped, 2),
        "complete": f"{st['complete']}/{st['shards']}",
        "leftover_files": leftovers(out),
        "raylets_left": raylets(),
    }

    print(json.dumps(rows, indent=1))
    a, b = rows["local"], rows["ray"]
    print(f"\n{'':24}{'local':>12}{'ray (' + str(args.cpus) + ' CPUs)':>16}")
    for key in ("wall_s", "sum_shard_s", "mean_shard_s"):
        print(f"{key:24}{a[key]:>12}{b[key]:>16}")
    print(
        f"Ray cluster start {b['cluster_start_s']} s (not in wall_s); empty-task round trip "
        f"{b['empty_task_roundtrip_ms']} ms; job overhead per task {b['job_overhead_per_task_s']} s; "
        f"speedup {b['speedup_vs_local']}×; same bytes: {b['same_sha256_as_local']}"
    )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
