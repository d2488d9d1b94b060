"""Benchmark: the exact BackSelect engine vs the model's raw forward throughput, and
vs a baseline with the structure of the original pipeline.

Everything is measured in one run, on one machine, at one thread count:

1. raw forward throughput of the model (images/s) over a sweep of batch sizes and
   memory layouts (contiguous, channels_last) — the ceiling for any engine;
2. the engine's candidate evaluations per second (exact backward selection,
   4×4-pixel features by default so that whole images finish in seconds);
3. a baseline with the original pipeline's structure: one image at a time,
   candidate masks built in NumPy, evaluated in batches of 128, ranked by p.

On a GPU (``--device cuda``) the same measurements run there, per precision
(``--precision float32,bf16``: bf16 = ``torch.autocast`` for the raw forward and
``Exact(autocast="bf16")`` for the engine), with ``--cuda-graph`` adding an engine run
that replays the forward as a CUDA graph; ``--no-baseline`` skips part 3.

Usage:  .venv/bin/python bench/backselect.py [--threads 2] [--images 32] [--patch 4] [--repeats 2]
        .venv/bin/python bench/backselect.py --device cuda --precision float32,bf16 --layouts channels_last \
            --batches 256,1024,4096 --images 256 --no-baseline --cuda-graph --json ratio.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

import overinterp
from overinterp import Exact, backselect, patch_features
from overinterp.models import create_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def load_model_and_images(n: int) -> tuple[torch.nn.Module, torch.Tensor, str]:
    ckpt = SHARED / "models" / "resnet20-cifar10.th"
    data = SHARED / "cifar10-lossless.npz"
    if ckpt.exists():
        model = create_model("resnet20", checkpoint=ckpt, preprocessing="imagenet")
        source = "pretrained resnet20 (shared checkpoint)"
    else:
        torch.manual_seed(0)
        model = create_model("resnet20", preprocessing="imagenet")
        source = "resnet20, random weights (shared checkpoint absent)"
    if data.exists():
        arr = np.load(data)["test_images"][:n]
        images = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0
    else:
        images = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    return model.eval(), images, source


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _amp(device: torch.device, precision: str):
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@torch.inference_mode()
def raw_throughput(
    model, batch: int, channels_last: bool, seconds: float, device: torch.device, precision: str = "float32"
) -> float:
    """Images/s of ``model(x)`` on one fixed batch already on ``device`` (``precision``: float32 or bf16 autocast)."""
    x = torch.rand(batch, 3, 32, 32, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with _amp(device, precision):
        for _ in range(3 if device.type == "cuda" else 1):  # warm-up (cuDNN autotuning on CUDA)
            model(x)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while True:
            model(x)
            n += batch
            if n % (batch * 8) == 0 or device.type != "cuda":
                _sync(device)
                dt = time.perf_counter() - t0
                if dt >= seconds:
                    return n / dt


def original_pipeline_rate(model, image: torch.Tensor, groups: torch.Tensor, steps: int) -> float:
    """Evals/s of a baseline with the original structure (numpy masks, batches of 128, rank by p)."""
    x = image.numpy()
    base = model.baseline.view(3, 1, 1).numpy()
    g = groups.numpy()
    with torch.inference_mode():
        target = int(model(image[None]).argmax(1))
    remaining = list(range(int(g.max()) + 1))
    cur = x.copy()
    evals, t0 = 0, time.perf_counter()
    for _ in range(steps):
        cands = []
        for f in remaining:
            c = cur.copy()
            m = g == f
            c[:, m] = np.broadcast_to(base, c.shape)[:, m]
            cands.append(c)
        batch = np.stack(cands)
        probs = []
        with torch.inference_mode():
            for s in range(0, len(batch), 128):
                out = model(torch.from_numpy(batch[s : s + 128]))
                probs.append(torch.softmax(out, 1)[:, target].numpy())
        best = int(np.argmax(np.concatenate(probs)))
        f = remaining.pop(best)
        m = g == f
        cur[:, m] = np.broadcast_to(base, cur.shape)[:, m]
        evals += len(cands)
    return evals / (time.perf_counter() - t0)


def engine_rate(model, images, groups, total: int, bs: int, cl, precision: str, repeats: int, graph: bool):
    """Best of ``repeats``: candidate evaluations/s of exact backselect, and the trace of the last run."""
    method = Exact(channels_last=cl, autocast=None if precision == "float32" else "bf16")
    old = os.environ.get("OVERINTERP_CUDA_GRAPH")
    os.environ["OVERINTERP_CUDA_GRAPH"] = "1" if graph else "0"
    try:
        rate, trace = 0.0, None
        for _ in range(repeats):  # best of k: throughput under background noise
            _sync(images.device)
            t0 = time.perf_counter()
            trace = backselect(model, images, method=method, features=groups, batch_size=bs, progress=False)
            rate = max(rate, total / (time.perf_counter() - t0))  # the trace is on the CPU: synchronised
    finally:
        if old is None:
            os.environ.pop("OVERINTERP_CUDA_GRAPH", None)
        else:
            os.environ["OVERINTERP_CUDA_GRAPH"] = old
    return rate, trace


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--precision", default="float32", help="comma list of float32, bf16")
    ap.add_argument("--layouts", default="contiguous,channels_last", help="comma list of contiguous, channels_last")
    ap.add_argument("--images", type=int, default=32, help="images for the engine run (batched together)")
    ap.add_argument("--patch", type=int, default=4, help="feature size in pixels (1 = one feature per pixel)")
    ap.add_argument("--seconds", type=float, default=2.0, help="time per raw-throughput point")
    ap.add_argument("--baseline-steps", type=int, default=4)
    ap.add_argument("--no-baseline", action="store_true", help="skip the original-pipeline baseline (part 3)")
    ap.add_argument("--cuda-graph", action="store_true", help="also time the engine with its CUDA-graph forward")
    ap.add_argument("--repeats", type=int, default=2, help="best of this many runs per measurement")
    ap.add_argument("--batches", default="64,128,256,512,1024")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    layouts = [s.strip() for s in args.layouts.split(",") if s.strip()]
    if not set(precisions) <= {"float32", "bf16"} or not precisions:
        ap.error(f"--precision takes float32 and/or bf16, got {args.precision!r}")
    if not set(layouts) <= {"contiguous", "channels_last"} or not layouts:
        ap.error(f"--layouts takes contiguous and/or channels_last, got {args.layouts!r}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model, images, source = load_model_and_images(args.images)
    model, images = model.to(device), images.to(device)
    print(f"overinterp {overinterp.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"model: {source}; images: {tuple(images.shape)}; device: {device}")
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}")

    groups = patch_features(32, 32, args.patch)
    p = int(groups.max()) + 1
    total = args.images * p * (p + 1) // 2
    report: dict = {"threads": torch.get_num_threads(), "model": source, "device": str(device), "P": p}
    results: dict = {}
    for precision in precisions:
        print(f"\n== {precision}")
        print("1. raw forward throughput (images/s)")
        sweep = {}
        for bs in [int(b) for b in args.batches.split(",")]:
            for cl in [lay == "channels_last" for lay in layouts]:
                r = max(
                    raw_throughput(model, bs, cl, args.seconds / args.repeats, device, precision)
                    for _ in range(args.repeats)
                )
                sweep[(bs, cl)] = r
                print(f"   batch {bs:5d}  {'channels_last' if cl else 'contiguous   '}  {r:9.1f}")
        (best_bs, best_cl), best = max(sweep.items(), key=lambda kv: kv[1])
        print(f"   best: batch {best_bs}, {'channels_last' if best_cl else 'contiguous'}: {best:.1f} images/s")

        print(f"2. engine: exact backselect, {args.images} images × P = {p} features = {total:,} evaluations")
        runs = {}
        configs = {
            "best raw config": (best_bs, best_cl, False),
            "defaults": (overinterp.DEFAULT_BATCH_SIZE, None, False),
        }
        if args.cuda_graph and device.type == "cuda":
            configs["best + cuda graph"] = (best_bs, best_cl, True)
        for label, (bs, cl, graph) in configs.items():
            rate, trace = engine_rate(model, images, groups, total, bs, cl, precision, args.repeats, graph)
            runs[label] = rate
            layout = "channels_last" if trace.meta["channels_last"] else "contiguous"
            extra = f", graph {'on' if trace.meta.get('cuda_graph') else 'off'}" if graph else ""
            print(
                f"   {label:17s} (batch {bs}, {layout}{extra}): {rate:9.1f} evaluations/s "
                f"= {rate / best:.3f} × best raw forward"
            )
        engine = runs["best raw config"]
        results[precision] = {
            "raw": {f"{b}/{'cl' if c else 'contig'}": r for (b, c), r in sweep.items()},
            "best_raw": best,
            "best_batch": best_bs,
            "best_channels_last": best_cl,
            "engine": runs,
            "ratio": engine / best,
            "ratio_cuda_graph": runs["best + cuda graph"] / best if "best + cuda graph" in runs else None,
        }

    first = results[precisions[0]]
    engine, ratio = first["engine"]["best raw config"], first["ratio"]
    base_rate = None
    if not args.no_baseline:
        print(
            f"\n3. original-pipeline baseline ({args.baseline_steps} steps of one image, numpy masks, batches of 128)"
        )
        cpu_model = model.to("cpu")
        base_rate = max(
            original_pipeline_rate(cpu_model, images[0].cpu(), groups, args.baseline_steps) for _ in range(args.repeats)
        )
        print(f"   {base_rate:9.1f} evaluations/s (CPU)")

    print("\nsummary")
    for precision, res in results.items():
        graph = f", with CUDA graph {res['ratio_cuda_graph']:.3f}" if res["ratio_cuda_graph"] is not None else ""
        print(f"   {precision}: engine / raw forward (best vs best): {res['ratio']:.3f}{graph}   (target ≥ 0.9)")
    if base_rate is not None:
        print(f"   engine / original-pipeline baseline: {engine / base_rate:.2f}×")
    print(f"   exact backselect of one 32×32 image (P = 1024, 524,800 evals) ≈ {524800 / engine:.1f} s here")
    if args.json:
        first_only = {k: first[k] for k in ("raw", "best_raw", "best_batch", "best_channels_last", "engine", "ratio")}
        report.update(first_only)
        report.update({"precisions": results, "baseline": base_rate})
        if base_rate is not None:
            report["speedup"] = engine / base_rate
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if math.isfinite(ratio) else 1


if __name__ == "__main__":
    sys.exit(main())
