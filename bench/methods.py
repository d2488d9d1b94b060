"""Benchmark: what each faster BackSelect method costs and loses against float32 exact.

On the pretrained CIFAR-10 ResNet20 and lossless CIFAR-10 test images (from
``../shared/data``), every method runs on the same images as float32 exact
backward selection and is compared with it:

* passes per image — forward passes (forward+backward for gradient methods);
* step agreement — where the method takes single steps: the fraction of those
  steps whose choice equals float32 exact's choice *from the same state*
  (``--audit-steps`` steps per image, evenly spaced, each re-scored exactly:
  all remaining candidates in float32); after it, the fraction of those
  positions where the method's order equals exact's order;
* wall time per image and speed-up over exact (same process, same threads);
  on a shared machine wall times drift with the load, so the cost is also
  *modelled*: passes per image divided by the model's forward (float32, bf16
  autocast) and forward+backward rates at full batches, measured interleaved
  at the end of the run;
* overlap of the 5% kept sets with exact's (|K ∩ K_exact| / |K_exact|);
* mean SIS size at τ (re-verified with the model; over images with f(x) ≥ τ);
* the model's accuracy on the 5% subsets (kept pixels only, the rest at the
  baseline, i.e. the dataset mean).

Usage:  .venv/bin/python bench/methods.py [--images 4] [--patch 1] [--threads 2] [--json out.json]
Quick:  .venv/bin/python bench/methods.py --images 2 --patch 4
Exact dominates the cost (P(P+1)/2 = 524,800 forward passes per 32×32 image).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import overinterp
from overinterp import Adaptive, BatchedGradient, Exact, KStep, Method, Screened, backselect, patch_features
from overinterp.models import create_model
from overinterp.sis.scoring import target_logodds

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

#: The methods compared, by the name used on the command line and in the table.
SPECS: dict[str, Method] = {
    "exact": Exact(),
    "screened-bf16-m16": Screened(rescore_top=16),
    "kstep-16": KStep(16),
    "adaptive": Adaptive(),
    "adaptive-gradient": Adaptive(head="gradient"),
    "gradient-1": BatchedGradient(1),
    "gradient-8": BatchedGradient(8),
    "gradient-64": BatchedGradient(64),
    # not run by default: exact again with another batch size and memory layout, to show
    # how far float32 layout noise alone moves the figures (measured: not at all)
    "exact-rerun": Exact(channels_last=False),
}
DEFAULT = [name for name in SPECS if name != "exact-rerun"]


def single_step_positions(method: Method, p: int) -> list[int]:
    """Order positions the method fills by a single-removal step (excluding the trivial last one)."""
    if isinstance(method, Exact):
        return []  # exact's own steps: agreement 1 by definition, nothing to audit
    if isinstance(method, Screened) or (isinstance(method, (KStep, BatchedGradient)) and method.k == 1):
        return list(range(p - 1))
    if isinstance(method, Adaptive):
        out, rem = [], p
        while rem > 0:
            r = method.step_size(rem, p) if rem > method.tail_count(p) else 1
            if r == 1 and rem > 1:
                out.append(p - rem)
            rem -= max(1, min(r, rem))
        return out
    return []


@torch.inference_mode()
def audit_steps(model, images, trace, positions: list[list[int]], batch_size: int) -> list[tuple[bool, float]]:
    """For each (image, position s): is ``order[s]`` the float32 exact choice from the state
    ``order[:s]``? Returns (agree, regret = best − chosen log-odds) per audited step."""
    c, h, w = trace.image_shape
    groups = trace.feature_map().groups
    base = trace.baseline.to(images.dtype)
    samples = []  # (image, position, state image, remaining ids)
    for i, ss in enumerate(positions):
        p = int(trace.num_features[i])
        order = trace.order_padded[i, :p]
        for s in ss:
            removed = torch.zeros(p, dtype=torch.bool)
            removed[order[:s]] = True
            xs = torch.where(removed[groups[i]].view(1, h, w), base, images[i])
            samples.append((i, s, xs, (~removed).nonzero().flatten()))
    pairs = [(k, int(f)) for k, (_, _, _, rem) in enumerate(samples) for f in rem]
    scores = torch.empty(len(pairs), dtype=torch.float64)
    for a in range(0, len(pairs), batch_size):
        chunk = pairs[a : a + batch_size]
        ks = torch.tensor([k for k, _ in chunk])
        fs = torch.tensor([f for _, f in chunk])
        states = torch.stack([samples[k][2] for k in ks.tolist()])
        img = torch.tensor([samples[k][0] for k in ks.tolist()])
        m = (groups[img] == fs.view(-1, 1, 1)).unsqueeze(1)
        x = torch.where(m, base, states).contiguous(memory_format=torch.channels_last)
        scores[a : a + len(chunk)] = target_logodds(model(x), trace.target[img]).double()
    out, start = [], 0
    for i, s, _, rem in samples:
        sc = scores[start : start + len(rem)]
        start += len(rem)
        best = int(sc.argmax())  # first maximum: lowest id
        chosen = int(trace.order_padded[i, s])
        ci = int((rem == chosen).nonzero().flatten()[0])
        out.append((int(rem[best]) == chosen, float(sc[best] - sc[ci])))
    return out


def kept(trace, fraction: float) -> list[set[int]]:
    out = []
    for i, p in enumerate(trace.num_features.tolist()):
        k = min(p, math.ceil(fraction * p - 1e-9))
        out.append(set(trace.order_padded[i, p - k : p].tolist()))
    return out


@torch.inference_mode()
def subset_accuracy(model, images, labels, trace, fraction: float) -> float:
    keep = trace.keep_mask(fraction)
    x = torch.where(keep, images, trace.baseline.to(images.dtype))
    return float((model(x).argmax(1) == labels).float().mean())


def measure_rates(model, batch: int, seconds: float = 1.5, rounds: int = 2) -> dict[str, float]:
    """Images/s of the forward in float32 and under bf16 autocast (channels-last), and of
    forward+backward to the input; interleaved ``rounds`` times, best kept."""
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)

    def timed(fn) -> float:
        fn()
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            fn()
            n += batch
        return n / (time.perf_counter() - t0)

    def fwd():
        with torch.inference_mode():
            model(x)

    def bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            model(x)

    def fwd_bwd():
        xg = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xg)[:, 0].sum(), xg)

    rates = {"fp32": 0.0, "bf16": 0.0, "fwd_bwd": 0.0}
    for _ in range(rounds):
        for key, fn in (("fp32", fwd), ("bf16", bf16), ("fwd_bwd", fwd_bwd)):
            rates[key] = max(rates[key], timed(fn))
    return rates


def fmt_k(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=4, help="CIFAR-10 test images (the first N), all methods")
    ap.add_argument("--patch", type=int, default=1, help="feature = patch×patch pixels (1: one feature per pixel)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch-size", type=int, default=overinterp.DEFAULT_BATCH_SIZE)
    ap.add_argument("--methods", default=",".join(DEFAULT), help=f"comma-separated subset of {','.join(SPECS)}")
    ap.add_argument("--tau", type=float, default=0.99, help="SIS threshold")
    ap.add_argument("--fraction", type=float, default=0.05, help="kept fraction for overlap and accuracy")
    ap.add_argument("--audit-steps", type=int, default=32, help="single steps audited per image (0: all)")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = ap.parse_args()

    names = [m for m in args.methods.split(",") if m]
    unknown = [m for m in names if m not in SPECS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {list(SPECS)}")
    if "exact" not in names:
        names.insert(0, "exact")
    ckpt, data = SHARED / "models" / "resnet20-cifar10.th", SHARED / "cifar10-lossless.npz"
    if not ckpt.exists() or not data.exists():
        print(f"needs {ckpt} and {data} (the shared data folder); not found", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    model = create_model("resnet20", checkpoint=ckpt, preprocessing="imagenet").eval()
    npz = np.load(data)
    images = torch.from_numpy(npz["test_images"][: args.images]).permute(0, 3, 1, 2).float() / 255.0
    labels = torch.from_numpy(npz["test_labels"][: args.images].astype(np.int64))
    n = images.shape[0]
    features = None if args.patch == 1 else patch_features(32, 32, args.patch)
    p = 1024 if features is None else int(features.max()) + 1
    with torch.inference_mode():
        full_acc = float((model(images).argmax(1) == labels).float().mean())
    cmd = "bench/methods.py " + " ".join(sys.argv[1:])
    print(
        f"overinterp {overinterp.__version__}, torch {torch.__version__}, {platform.machine()}, "
        f"threads {torch.get_num_threads()}, batch {args.batch_size}"
    )
    print(
        f"pretrained ResNet20, {n} lossless CIFAR-10 test images (0..{n - 1}), P = {p} features "
        f"(patch {args.patch}), model accuracy on them {full_acc:.2f}",
        flush=True,
    )

    traces, walls = {}, {}
    for name in names:
        t0 = time.perf_counter()
        bs = args.batch_size - 1 if name == "exact-rerun" and args.batch_size > 1 else args.batch_size
        traces[name] = backselect(
            model, images, method=SPECS[name], features=features, batch_size=bs, progress=False, labels=labels
        )
        walls[name] = (time.perf_counter() - t0) / n
        print(f"  {name}: {walls[name]:.2f} s/image", file=sys.stderr, flush=True)

    exact = traces["exact"]
    k_exact = kept(exact, args.fraction)
    rows = []
    for name in names:
        tr, method = traces[name], SPECS[name]
        meta = tr.meta
        fwd = meta.get("evaluations", 0) / n
        fb = meta.get("forward_backward_passes", 0) / n
        row = {
            "method": name,
            "params": method.describe(),
            "wall_s_per_image": walls[name],
            "speedup": walls["exact"] / walls[name],
            "forward_per_image": fwd,
            "fwd_bwd_per_image": fb,
        }
        if "screened_evaluations" in meta:
            row["screened_per_image"] = meta["screened_evaluations"] / n
            row["rescored_per_image"] = meta["rescored_evaluations"] / n
        pos = single_step_positions(method, p)
        if name != "exact" and pos:
            take = (
                pos
                if args.audit_steps <= 0 or len(pos) <= args.audit_steps
                else [pos[round(j * (len(pos) - 1) / (args.audit_steps - 1))] for j in range(args.audit_steps)]
            )
            t0 = time.perf_counter()
            res = audit_steps(model, images, tr, [take] * n, args.batch_size)
            print(f"  audit {name}: {len(res)} steps, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            row["step_agreement"] = sum(a for a, _ in res) / len(res)
            row["mean_regret_logodds"] = sum(r for _, r in res) / len(res)
            row["audited_steps"] = len(res)
            same_pos = [int(tr.order_padded[i, s]) == int(exact.order_padded[i, s]) for i in range(n) for s in pos]
            row["same_position_as_exact"] = sum(same_pos) / len(same_pos)
        k_m = kept(tr, args.fraction)
        row["kept_overlap"] = sum(len(a & b) / len(b) for a, b in zip(k_m, k_exact)) / n
        sis = tr.find_sis(args.tau, model, images, batch_size=args.batch_size)
        sizes = [s for s in sis.sizes if s is not None]
        row["sis_mean_size"] = sum(sizes) / len(sizes) if sizes else float("nan")
        row["sis_images"] = len(sizes)
        row["sis_extended"] = sis.extended
        row["subset_accuracy"] = subset_accuracy(model, images, labels, tr, args.fraction)
        rows.append(row)

    rates = measure_rates(model, args.batch_size)
    print(
        f"  rates (images/s): fp32 {rates['fp32']:.0f}, bf16 {rates['bf16']:.0f}, fwd+bwd {rates['fwd_bwd']:.0f}",
        file=sys.stderr,
        flush=True,
    )
    for r in rows:
        fp32 = r["forward_per_image"] - r.get("screened_per_image", 0.0)
        r["modelled_s_per_image"] = (
            fp32 / rates["fp32"]
            + r.get("screened_per_image", 0.0) / rates["bf16"]
            + r["fwd_bwd_per_image"] / rates["fwd_bwd"]
        )
    for r in rows:
        r["modelled_speedup"] = rows[0]["modelled_s_per_image"] / r["modelled_s_per_image"]

    pct = f"{100 * args.fraction:g}%"
    print(f"\nCommand: `{cmd}`\n")
    print(
        f"| method | forward passes/img | fwd+bwd passes/img | single-step agreement (same state / same position) "
        f"| wall s/img (speed-up) | modelled s/img (speed-up) | {pct} kept overlap "
        f"| mean SIS size τ={args.tau:g} (images) | accuracy on {pct} subsets |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "screened_per_image" in r:
            fwd = f"{fmt_k(r['screened_per_image'])} bf16 + {fmt_k(r['rescored_per_image'])} fp32"
        else:
            fwd = fmt_k(r["forward_per_image"]) if r["forward_per_image"] else "—"
        fb = fmt_k(r["fwd_bwd_per_image"]) if r["fwd_bwd_per_image"] else "—"
        if r["method"] == "exact":
            agree = "1 (reference)"
        elif r["params"]["name"] == "exact":
            agree = "exact steps"
        elif "step_agreement" in r:
            agree = f"{r['step_agreement']:.3f} / {r['same_position_as_exact']:.3f}"
        else:
            agree = "n/a (no single steps)"
        sis = f"{r['sis_mean_size']:.1f} ({r['sis_images']}/{n})"
        print(
            f"| {r['method']} | {fwd} | {fb} | {agree} | {r['wall_s_per_image']:.2f} ({r['speedup']:.1f}×) "
            f"| {r['modelled_s_per_image']:.2f} ({r['modelled_speedup']:.1f}×) "
            f"| {r['kept_overlap']:.3f} | {sis} | {r['subset_accuracy']:.2f} |"
        )
    print(
        f"\nModelled: passes ÷ rates measured at the end of this run at batch {args.batch_size} "
        f"(fp32 {rates['fp32']:.0f}, bf16 {rates['bf16']:.0f}, fwd+bwd {rates['fwd_bwd']:.0f} images/s); "
        f"wall times include the load of anything else running on the machine."
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "command": cmd,
                    "images": n,
                    "P": p,
                    "patch": args.patch,
                    "threads": torch.get_num_threads(),
                    "batch_size": args.batch_size,
                    "tau": args.tau,
                    "fraction": args.fraction,
                    "full_accuracy": full_acc,
                    "rates": rates,
                    "torch": str(torch.__version__),
                    "rows": rows,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
