"""The steps of ``bench/gpu_check.sh``, one sub-command each; each prints ``ROW: <result>`` last.

    tests  the tests that skip without CUDA (``pytest -k "cuda or device"``)
    ratio  the engine vs the raw forward (bench/backselect.py, float32 and bf16, channels-last)
    fast   ``Fast()`` on CIFAR-10 test images with the shared pretrained ResNet20: time per image
    train  training throughput for a few hundred steps (bench/train.py)
    ray    ``backselect-dataset --executor ray`` with one GPU task

A failing step prints ``FAILED: <reason>`` and exits 1. ``--cpu-smoke`` runs every
step at tiny sizes on the CPU, to test the script where there is no GPU.

Usage:  python bench/gpu_check.py STEP [--cpu-smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CKPT = DATA / "models" / "resnet20-cifar10.th"
NPZ = DATA / "cifar10-lossless.npz"


class StepFailed(Exception):
    """The step could not produce its row; the message says why."""


def _run(cmd: list[str], log: Path) -> str:
    """Run ``cmd`` (output teed to ``log``); its combined output, or StepFailed with its last line."""
    print("$", " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    log.write_text(out)
    print(out[-4000:], flush=True)
    if proc.returncode != 0:
        last = [ln for ln in out.strip().splitlines() if ln.strip()][-1:] or ["no output"]
        raise StepFailed(f"exit code {proc.returncode}: {last[0][:200]}")
    return out


def _need_data() -> None:
    for p in (CKPT, NPZ):
        if not p.exists():
            raise StepFailed(f"{p} is missing (the shared data folder)")


def step_tests(args: argparse.Namespace) -> str:
    out = _run(
        [sys.executable, "-m", "pytest", "tests", "-k", "cuda or device", "-q", "-rs", "-p", "no:cacheprovider"]
        + ["--continue-on-collection-errors"],
        args.out / "tests.log",
    )
    counts = {k: int(v) for v, k in re.findall(r"(\d+) (passed|failed|skipped|error|errors|deselected)", out)}
    passed, skipped = counts.get("passed", 0), counts.get("skipped", 0)
    row = f"{passed} passed, {skipped} skipped (pytest -k 'cuda or device')"
    if not args.cpu_smoke and passed == 0:
        raise StepFailed(f"no CUDA test ran: {row} (is CUDA visible to torch?)")
    return row


def step_ratio(args: argparse.Namespace) -> str:
    js = args.out / "ratio.json"
    if args.cpu_smoke:
        sizes = ["--device", "cpu", "--threads", "1", "--batches", "16,32", "--images", "2", "--patch", "8"]
        sizes += ["--seconds", "0.3", "--repeats", "1"]
    else:
        sizes = ["--device", "cuda", "--batches", "256,1024,4096", "--images", "64", "--patch", "4"]
        sizes += ["--seconds", "1.5", "--repeats", "2", "--cuda-graph"]
    _run(
        [sys.executable, "bench/backselect.py", "--precision", "float32,bf16", "--layouts", "channels_last"]
        + ["--no-baseline", "--json", str(js)]
        + sizes,
        args.out / "ratio.log",
    )
    rep = json.loads(js.read_text())
    parts = []
    for prec, r in rep["precisions"].items():
        graph = f", graph {r['ratio_cuda_graph']:.2f}" if r.get("ratio_cuda_graph") is not None else ""
        parts.append(
            f"{prec}: {r['ratio']:.2f}{graph} (batch {r['best_batch']}, raw {r['best_raw']:,.0f} img/s, "
            f"engine {r['engine']['best raw config']:,.0f} evals/s)"
        )
    return "engine/raw " + "; ".join(parts)


def step_fast(args: argparse.Namespace) -> str:
    _need_data()
    import numpy as np
    import torch

    from overinterp import Fast, backselect, patch_features
    from overinterp.models import create_model

    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    if args.cpu_smoke:
        torch.set_num_threads(1)
    n, batch = (2, 64) if args.cpu_smoke else (64, 2048)
    features = patch_features(32, 32, 4) if args.cpu_smoke else None  # smoke: P = 64, else one per pixel
    model = create_model("resnet20", checkpoint=CKPT, preprocessing="imagenet").to(device)
    arr = np.load(NPZ)["test_images"][:n]
    images = (torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255).to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        backselect(model, images[:2], method=Fast(), features=features, batch_size=batch, progress=False)  # warm-up
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    trace = backselect(model, images, method=Fast(), features=features, batch_size=batch, progress=False)
    dt = time.perf_counter() - t0
    sis = trace.find_sis(0.99, model, images, batch_size=batch)
    found = [s for s in sis if s is not None]
    size = f", mean SIS(0.99) {sum(len(s) for s in found) / len(found):.1f} features" if found else ""
    evals = trace.meta.get("evaluations", 0) / n
    return (
        f"{dt / n:.3f} s/image ({n} images, P = {trace.P}, batch {batch}, {evals:,.0f} evals/image, "
        f"{len(found)}/{n} with a SIS{size})"
    )


def step_train(args: argparse.Namespace) -> str:
    if args.cpu_smoke:
        sizes = ["--device", "cpu", "--threads", "1", "--images", "256", "--batch-size", "32", "--seconds", "1"]
    else:  # 2 epochs of 200 steps (the first warms up), batch 128
        sizes = ["--device", "cuda", "--images", "25600", "--batch-size", "128", "--seconds", "5"]
    out = _run([sys.executable, "bench/train.py", "--arch", "resnet20"] + sizes, args.out / "train.log")
    rep = json.loads([ln for ln in out.splitlines() if ln.startswith("{")][-1])
    steps = rep["images"] // rep["batch_size"]
    return (
        f"{rep['training_images_per_s']:,.0f} img/s training ({steps} steps/epoch, batch {rep['batch_size']}"
        f"{', bf16' if rep['amp'] else ''}), raw fwd+bwd {rep['raw_forward_backward_images_per_s']:,.0f}, "
        f"ratio {rep['ratio']:.2f}"
    )


def step_ray(args: argparse.Namespace) -> str:
    _need_data()
    job = args.out / "ray-job"
    shutil.rmtree(job, ignore_errors=True)  # a job folder left by an earlier check would resume, not rerun
    if args.cpu_smoke:
        dev = ["--device", "cpu", "--gpus-per-task", "0", "--threads", "1", "--limit", "2", "--patch", "8"]
    else:
        dev = ["--device", "cuda", "--gpus-per-task", "1", "--limit", "16"]
    t0 = time.perf_counter()
    _run(
        [sys.executable, "-m", "overinterp", "backselect-dataset", "--model", "resnet20", "--checkpoint", str(CKPT)]
        + ["--preprocessing", "imagenet", "--dataset", f"{NPZ}:test", "--method", "fast", "--shard-size", "16"]
        + ["--executor", "ray", "--cpus-per-task", "1", "--max-retries", "0", "--no-progress", "--out", str(job)]
        + dev,
        args.out / "ray.log",
    )
    wall = time.perf_counter() - t0
    records = sorted((job / "shards").glob("shard-*.json"))
    if not records:
        raise StepFailed(f"no shard record in {job / 'shards'}")
    rec = json.loads(records[0].read_text())
    return (
        f"{len(records)} shard(s) of {rec['images']} images on {rec['device']} (pid {rec['pid']}), "
        f"shard {rec['seconds']:.1f} s, command {wall:.1f} s wall (with Ray start)"
    )


STEPS = {"tests": step_tests, "ratio": step_ratio, "fast": step_fast, "train": step_train, "ray": step_ray}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=sorted(STEPS))
    ap.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU")
    ap.add_argument("--out", type=Path, default=Path("/tmp/overinterp-gpu-check"), help="logs and outputs")
    args = ap.parse_args()
    args.out = args.out / args.step
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.cpu_smoke:
        import torch

        if not torch.cuda.is_available():
            print("FAILED: torch sees no CUDA device (use --cpu-smoke to test the script on a CPU)")
            return 1
    try:
        row = STEPS[args.step](args)
    except StepFailed as exc:
        print(f"FAILED: {exc}")
        return 1
    except Exception as exc:  # noqa: BLE001 - fail soft: the script prints the reason and goes on
        print(f"FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
        return 1
    print(f"ROW: {row}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
