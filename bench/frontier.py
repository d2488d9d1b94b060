"""The measured frontier: every backward-selection method against exact, on two
models of different architecture families, on the same images.

Exact per-pixel anchors are dataset jobs (``overinterp backselect-dataset
--method exact``; resumable, reused across runs), one per model; every other
method runs here on the anchored images, in this process, at one thread count.
For each method and model it reports:

* cost per image in *forward-equivalents*: forward passes plus forward+backward
  passes times their cost in forward passes, measured here side by side at the
  batch size the methods use;
* wall seconds per image (this process; the machine may be shared);
* on the 5% subsets (last-removed 5% of features, the rest at the baseline):
  the model's accuracy against the true labels, the mean probability of the
  full-image class, the confidence drop;
* mean SIS size at τ = 0.99 and 0.9 (re-verified; over images with an SIS) and
  the fraction of images with an SIS;
* each as a difference from exact with a paired 95% t-interval over images.

It writes JSON (``--out``) and the frontier figure (``--figure``): cost on a log
axis against each quality difference, one marker per method and model.

Usage::

    .venv/bin/python bench/frontier.py --job resnet20=runs/anchors/resnet20-exact \\
        --job vgg_small=runs/anchors/vgg_small-exact --out bench/results/frontier.json \\
        --figure docs/frontier.png [--methods fast,adaptive-gradient,...] [--scaling]

Anchors (16 lossless test images each, ~10 min/image for ResNet20 on one core)::

    overinterp backselect-dataset --model resnet20 --checkpoint ../shared/data/models/resnet20-cifar10.th \\
        --preprocessing imagenet --dataset ../shared/data/cifar10-lossless.npz:test --limit 16 \\
        --method exact --shard-size 1 --threads 1 --out runs/anchors/resnet20-exact
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import overinterp
from overinterp.analysis.faithfulness import TARGETS, compare_measures, trace_measures
from overinterp.jobs import load_job
from overinterp.sis.methods import make_method
from overinterp.sis.methods.gradient import differentiable_copies, mask_gradient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier_models import ROLES  # noqa: E402  (tuning vs held out, fixed before any held-out result)

#: label → (method name, parameters). The frontier's default set.
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "fast": ("fast", {}),
    # round 1's default (before the head's blocks grew from small ones; bench/results/frontier-split.md)
    "fast-r1": ("fast", {"growth": 0.0, "screened": 0.08, "recall": 4}),
    # earlier sweeps, all on round 1's schedule (growth 0)
    "fast-w32r4": ("fast", {"width": 32, "step_fraction": 0.05, "recall": 4, "growth": 0.0, "screened": 0.08}),
    "fast-w32": ("fast", {"width": 32, "step_fraction": 0.05, "recall": 0, "growth": 0.0, "screened": 0.08}),
    "fast-w44s8": ("fast", {"width": 44, "step_fraction": 0.08, "recall": 0, "growth": 0.0, "screened": 0.08}),
    "fast-w16s15": ("fast", {"width": 16, "screened": 0.15, "recall": 0, "growth": 0.0}),
    "fast-w8": ("fast", {"width": 8, "screened": 0.15, "exact_cap": 48, "recall": 0, "growth": 0.0}),
    "fast-w4": ("fast", {"width": 4, "screened": 0.15, "recall": 0, "growth": 0.0}),
    "fast-e10": ("fast", {"width": 16, "screened": 0.15, "exact": 0.10, "exact_cap": 64, "recall": 0, "growth": 0.0}),
    "fast-w8e10": ("fast", {"width": 8, "screened": 0.15, "exact": 0.10, "exact_cap": 64, "recall": 0, "growth": 0.0}),
    "fast-w8p4": ("fast", {"width": 8, "screened": 0.15, "pool": 4.0, "exact_cap": 48, "recall": 0, "growth": 0.0}),
    # per-image adaptation (issue 24, round 1): a narrower base screen, widened after steps whose best came from its
    # bottom
    "fast-x24": (
        "fast",
        {"width": 24, "extend": 2, "extend_budget": 1.15, "growth": 0.0, "screened": 0.08, "recall": 4},
    ),
    "adaptive-gradient": ("adaptive", {"head": "gradient"}),
    "adaptive": ("adaptive", {}),
    "kstep16": ("kstep", {"k": 16}),
    "gradient-k1": ("gradient", {"k": 1}),
    "gradient-k8": ("gradient", {"k": 8}),
    "gradient-k64": ("gradient", {"k": 64}),
    "screened": ("screened", {}),
}
DEFAULT = ",".join(METHODS)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_kernels() -> dict[str, Any]:
    """Which CPU kernels PyTorch uses here (ISA level, oneDNN, bf16/int8 support)."""
    out: dict[str, Any] = {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }
    try:
        flags = Path("/proc/cpuinfo").read_text().split("flags", 1)[1].split("\n", 1)[0]
        out["isa"] = {f: f in flags.split() for f in ("avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8")}
    except (OSError, IndexError):
        pass
    return out


def measure_fb_ratio(model, images: torch.Tensor, batch: int, rounds: int = 3) -> dict[str, float]:
    """Seconds per image of a forward pass and of a mask-gradient forward+backward
    pass at ``batch`` images, interleaved; returns both and their ratio."""
    from overinterp.sis.backselect import _prepare  # private: only the bench measures the pieces
    from overinterp.sis.methods import Problem

    x = images[:1].expand(batch, -1, -1, -1).contiguous()
    forward, x, base, fmap, tgt = _prepare(model, x, None, None, None, batch)
    problem = Problem(forward, x, base, tgt, fmap)
    src, base = differentiable_copies(problem)
    pmax = problem.features.max_features
    masked = torch.zeros(batch, pmax, dtype=torch.bool)
    masked[:, ::3] = True
    idx = problem.features.shared.flatten().expand(batch, -1)
    act = torch.arange(batch)
    xin = torch.where(masked.gather(1, idx).view(batch, 1, *x.shape[2:]), base, problem.images)
    xin = xin.contiguous(memory_format=torch.channels_last)

    def fwd() -> None:
        with torch.inference_mode():
            problem.forward(xin)

    def fb() -> None:
        mask_gradient(problem, src, base, act, masked, idx, True)

    t_f, t_b = [], []
    fwd(), fb()
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(4):
            fwd()
        t_f.append((time.perf_counter() - t0) / (4 * batch))
        t0 = time.perf_counter()
        for _ in range(4):
            fb()
        t_b.append((time.perf_counter() - t0) / (4 * batch))
    f, b = float(np.median(t_f)), float(np.median(t_b))
    return {"forward_s": f, "forward_backward_s": b, "ratio": b / f}


def quality(trace, model, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image quality measures of one trace (:func:`overinterp.analysis.faithfulness.trace_measures`)."""
    return trace_measures(trace, model, images, labels)


def screening_summary(trace, d_prob5: torch.Tensor, base_width: int, adaptive: bool = True) -> dict[str, Any]:
    """The per-image screening diagnostic of one method's traces: per image the share of screened
    steps whose exact best came from the bottom quarter of the gradient screen (or from outside
    it), the steps screened wider than ``base_width``, and how the share ranks against the
    image's Δp on its 5% subset (Spearman; negative: the diagnostic flags the images where the
    method lost confidence)."""
    from scipy.stats import spearmanr

    scr = trace.meta["screening"]
    share = [b / s if s else float("nan") for b, s in zip(scr["bottom_quarter_steps"], scr["steps"])]
    wide = (trace.screen_width > base_width).sum(1).tolist() if trace.screen_width is not None and adaptive else []
    d = d_prob5.tolist()
    rho = float(spearmanr(share, d).statistic) if len(set(share)) > 1 and len(set(d)) > 1 else float("nan")
    return {
        "bottom_quarter_share": share,
        "mean_bottom_quarter_share": float(np.nanmean(share)),
        "max_bottom_quarter_share": float(np.nanmax(share)),
        "widened_steps_per_image": float(np.mean(wide)) if wide else float("nan"),
        "spearman_share_vs_d_prob5": rho,
        "d_prob5_per_image": d,
    }


def cost_of(trace, stats: dict[str, Any], ratio: float) -> dict[str, float]:
    n = len(trace)
    fwd = float(stats.get("evaluations", 0)) / n
    fb = float(stats.get("forward_backward_passes", 0)) / n
    return {"forward": fwd, "forward_backward": fb, "forward_equivalents": fwd + ratio * fb}


def summarize(q: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Means and paired differences from exact (:func:`overinterp.analysis.faithfulness.compare_measures`)."""
    return compare_measures(q, ref)


def load_anchor(spec: str) -> tuple[Any, Any, torch.Tensor, torch.Tensor, torch.Tensor | None, list[int], str]:
    """``DIR`` (an exact dataset job), ``DIR+DIR…`` (jobs of one model over other positions of one
    dataset, e.g. an extension with ``--offset``: their images in turn) or ``TRACE.pt@DIR:PATCH``
    (an exact trace over the first images of job ``DIR``'s dataset with ``PATCH``×``PATCH``
    features; the model is the job's). Returns (job, anchor trace, images, labels, features,
    positions, source); with several jobs, the first one's job."""
    from overinterp.data.specs import open_dataset
    from overinterp.sis import BackselectTrace, concat_traces, patch_features

    if "@" not in spec and "+" in spec:
        parts = [load_anchor(d) for d in spec.split("+")]
        jobs = [p[0] for p in parts]
        ids = {(j.manifest["identity"]["model_fingerprint"], j.spec.dataset) for j in jobs}
        if len(ids) != 1:
            raise SystemExit(f"{spec}: the jobs are not of one model and one dataset")
        return (
            jobs[0],
            concat_traces([p[1] for p in parts]),
            torch.cat([p[2] for p in parts]),
            torch.cat([torch.as_tensor(p[3]) for p in parts]),
            parts[0][4],
            [q for p in parts for q in p[5]],
            f"jobs {spec}",
        )
    if "@" not in spec:
        job = load_job(spec, allow_partial=True)
        images = job.load_images()
        images = images.float() / 255.0 if not images.is_floating_point() else images
        return job, job.trace, images, job.labels, job.trace.features, job.positions.tolist(), f"job {spec}"
    trace_path, _, rest = spec.partition("@")
    job_dir, _, patch = rest.rpartition(":")
    job = load_job(job_dir, allow_partial=True)
    anchor = BackselectTrace.load(trace_path)
    data = open_dataset(job.spec.dataset)
    n = len(anchor)
    images = data.images[:n]
    images = images.float() / 255.0 if not images.is_floating_point() else images
    h, w = images.shape[2:]
    return job, anchor, images, data.labels[:n], patch_features(h, w, int(patch)), list(range(n)), f"trace {trace_path}"


def run_model(
    label: str, spec: str, methods: list[str], images_limit: int | None, batch: int, log: Callable[[str], None]
) -> dict[str, Any]:
    job, anchor, images, labels, features, positions, source = load_anchor(spec)
    model = job.load_model()
    if images_limit is not None:
        keep = list(range(min(images_limit, len(anchor))))
        anchor = overinterp.sis.concat_traces([_select(anchor, keep)])
        images, labels = images[keep], labels[keep]
    n = len(anchor)
    p = int(anchor.num_features[0])
    log(f"[{label}] {n} anchored images, P = {p}, {source}")
    ratio = measure_fb_ratio(model, images, batch)
    log(
        f"[{label}] forward {ratio['forward_s'] * 1e3:.3f} ms/image, forward+backward "
        f"{ratio['forward_backward_s'] * 1e3:.3f} ms/image: ratio {ratio['ratio']:.2f}"
    )
    ref = quality(anchor, model, images, labels)
    exact_cost = {"forward": p * (p + 1) / 2, "forward_backward": 0.0, "forward_equivalents": p * (p + 1) / 2}
    rows: dict[str, Any] = {
        "exact": {
            **summarize(ref, ref),
            "cost": exact_cost,
            "wall_s_per_image": exact_cost["forward"] * ratio["forward_s"],
            "wall_note": "modelled: P(P+1)/2 x measured forward time",
        }
    }
    for name in methods:
        mname, params = METHODS[name]
        method = make_method(mname, **params)
        if mname == "screened":
            est = p * (p + 1) / 2 * _autocast_forward_s(model, batch)
            rows[name] = {
                "skipped": f"bf16 screen of P(P+1)/2 passes: about {est:.0f} s per image on this CPU "
                "(bf16 autocast is slower than float32 here; see levers)"
            }
            log(f"[{label}] {name}: skipped ({rows[name]['skipped']})")
            continue
        trace, wall, stats = cached_backselect(
            model, images, method, features, batch, positions[:n], None if CACHE is None else CACHE / label / name
        )
        q = quality(trace, model, images, labels)
        row = {
            **summarize(q, ref),
            "cost": cost_of(trace, stats, ratio["ratio"]),
            "wall_s_per_image": wall,
            "method": method.describe(),
        }
        if "screening" in trace.meta:
            row["screening"] = screening_summary(
                trace, q["prob5"] - ref["prob5"], int(getattr(method, "width", 32)), bool(getattr(method, "extend", 0))
            )
        rows[name] = row
        log(
            f"[{label}] {name}: {row['cost']['forward_equivalents']:.0f} fe/image ({wall:.2f} s), "
            f"acc5 {row['acc5']:.3f} (Δ {row['d_acc5']['mean']:+.3f}), prob5 {row['prob5']:.3f} "
            f"(Δ {row['d_prob5']['mean']:+.3f}), SIS99 {row['sis99']:.1f} (×{row['sis99_ratio']:.2f} exact)"
        )
    return {
        "role": ROLES.get(label.split("-p")[0], "unassigned"),
        "anchor": source,
        "images": n,
        "P": p,
        "positions": positions[:n],
        "model": job.model_name,
        "fb_ratio": ratio,
        "methods": rows,
    }


#: ``--cache DIR``: per-image traces of every method, reused across runs (set by main)
CACHE: Path | None = None


def cached_backselect(
    model, images: torch.Tensor, method, features, batch: int, positions: list[int], cache: Path | None
) -> tuple[Any, float, dict[str, float]]:
    """``method``'s trace on ``images`` (dataset ``positions``), wall s/image and pass counts (totals).

    With ``cache``, each image's trace is stored as ``cache/POSITION.pt`` with the
    method's description, wall time and pass counts, and reused when the
    description matches; only the missing images are computed (in one call)."""
    desc = method.describe()
    per: dict[int, dict[str, Any]] = {}
    if cache is not None:
        for i, pos in enumerate(positions):
            f = cache / f"{pos}.pt"
            if f.is_file():
                rec = torch.load(f, weights_only=False)
                if rec["method"] == desc:
                    per[i] = rec
    missing = [i for i in range(len(positions)) if i not in per]
    if missing:
        sub = features if features is None or features.dim() == 2 else features[missing]
        t0 = time.perf_counter()
        tr = overinterp.backselect(
            model, images[missing], method=method, features=sub, batch_size=batch, progress=False
        )
        wall = (time.perf_counter() - t0) / len(missing)
        counts = {k: float(tr.meta.get(k, 0)) / len(missing) for k in ("evaluations", "forward_backward_passes")}
        for j, i in enumerate(missing):
            per[i] = {"trace": _select(tr, [j]), "wall": wall, "counts": counts, "method": desc}
            if cache is not None:
                from overinterp._atomic import atomic_torch_save

                atomic_torch_save(per[i], cache / f"{positions[i]}.pt")
    order = [per[i] for i in range(len(positions))]
    trace = overinterp.sis.concat_traces([r["trace"] for r in order])
    totals = {k: sum(r["counts"][k] for r in order) for k in ("evaluations", "forward_backward_passes")}
    return trace, sum(r["wall"] for r in order) / len(order), totals


def precompute(label: str, job_dir: str, methods: list[str], limit: int | None, batch: int, log) -> None:
    """Fill the cache for the job's planned positions (anchored or not yet)."""
    from overinterp.data.specs import open_dataset

    job = load_job(job_dir, allow_partial=True)
    model = job.load_model()
    positions = list(job.spec.positions)[: limit or None]
    data = open_dataset(job.spec.dataset)
    images = data.images[positions].float() / 255.0
    for name in methods:
        mname, params = METHODS[name]
        if mname == "screened":
            continue
        t0 = time.perf_counter()
        cached_backselect(model, images, make_method(mname, **params), None, batch, positions, CACHE / label / name)
        log(f"[{label}] {name}: cached {len(positions)} images ({time.perf_counter() - t0:.0f} s)")


def _select(trace, keep: list[int]):
    return trace.select(keep)


def _autocast_forward_s(model, batch: int) -> float:
    x = torch.rand(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
        t0 = time.perf_counter()
        model(x)
    return (time.perf_counter() - t0) / batch


def scaling(job_dir: Path, sizes: tuple[int, ...], batch: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Cost of the recommended method at P = side² (images resized), 2 images each."""
    job, _, images, _, _, _, _ = load_anchor(str(job_dir))
    model = job.load_model()
    images = images[:2]
    method = make_method("fast")
    out = []
    for side in sizes:
        x = torch.nn.functional.interpolate(images, size=(side, side), mode="bilinear", align_corners=False)
        t0 = time.perf_counter()
        trace = overinterp.backselect(model, x, method=method, batch_size=batch, progress=False)
        wall = (time.perf_counter() - t0) / len(x)
        row = {
            "side": side,
            "P": side * side,
            "forward": trace.meta["evaluations"] / len(x),
            "forward_backward": trace.meta["forward_backward_passes"] / len(x),
            "wall_s_per_image": wall,
            "planned": method.planned_cost(side * side),
        }
        out.append(row)
        log(
            f"[scaling] P = {side * side}: {row['forward']:.0f} forward + {row['forward_backward']:.0f} "
            f"forward+backward per image, {wall:.2f} s"
        )
    return out


def _rate(f: Callable[[torch.Tensor], Any], x: torch.Tensor, reps: int = 6) -> float:
    with torch.inference_mode():
        f(x)
        t0 = time.perf_counter()
        for _ in range(reps):
            f(x)
    return reps * x.shape[0] / (time.perf_counter() - t0)


def _int8_copy(model, calib: torch.Tensor):
    """An int8 copy (FX post-training static quantization, x86 backend) of a model whose
    network has a ``features`` Sequential (VGG-style); ``None`` where that does not apply."""
    import copy

    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    net = getattr(model, "network", None)
    if not isinstance(getattr(net, "features", None), torch.nn.Sequential):
        return None
    torch.backends.quantized.engine = "x86"
    q = copy.deepcopy(model)
    pre = q.preprocessing if q.preprocessing is not None else (lambda t: t)
    prep = prepare_fx(q.network.features, get_default_qconfig_mapping("x86"), (pre(calib[:8]),))
    with torch.inference_mode():
        prep(pre(calib))
    q.network.features = convert_fx(prep)
    return q


def levers(spec: str, batch: int, states: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Reduced precision and the engine's overhead, measured side by side in one run.

    * raw forward throughput (images/s) at ``batch`` in float32 (contiguous and channels-last),
      bf16 autocast and int8 (VGG-style models only);
    * agreement with float32 steps: at ``states`` prefix states spread along the anchor's exact
      order, every remaining single removal is scored in float32 and in the reduced precision;
      the fraction of states where the reduced-precision best equals float32's, and where
      float32's best is among the reduced precision's top 8 (what a screen needs);
    * the engine: exact candidate evaluations per second on the last 120 features of 8 images
      divided by the raw channels-last float32 throughput at the same batch size.
    """
    from overinterp.sis.backselect import _prepare
    from overinterp.sis.methods import Exact, Problem

    job, anchor, images, labels, features, _, source = load_anchor(spec)
    model = job.load_model()
    x = images[:1].expand(batch, -1, -1, -1).contiguous()
    out: dict[str, Any] = {"anchor": source, "batch_size": batch, "kernels": cpu_kernels()}
    rates = {
        "float32": _rate(model, x),
        "float32_channels_last": _rate(model, x.contiguous(memory_format=torch.channels_last)),
    }

    def bf16(t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return model(t)

    rates["bf16_autocast_channels_last"] = _rate(bf16, x.contiguous(memory_format=torch.channels_last))
    q = _int8_copy(model, images[: min(64, len(images))])
    if q is not None:
        rates["int8_channels_last"] = _rate(q, x.contiguous(memory_format=torch.channels_last))
    out["images_per_s"] = rates
    log(f"[levers] raw forward images/s at batch {batch}: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
    # agreement at prefix states of the exact order
    forward, xs, base, fmap, tgt = _prepare(model, images, None, None, features, batch)
    p = int(anchor.num_features[0])
    picks = {"bf16": bf16, **({"int8": q} if q is not None else {})}
    agree = {k: [0, 0] for k in picks}
    for j in range(states):
        i = j % len(images)
        k = int(p * (0.05 + 0.9 * j / max(1, states - 1)))  # features already removed
        gone = anchor.order_padded[i, :k]
        rem = anchor.order_padded[i, k:p].sort().values
        m = torch.zeros(fmap.max_features, dtype=torch.bool)
        m[gone] = True
        pix = m[fmap.groups[i].flatten()].view(1, *xs.shape[2:])
        state = torch.where(pix, base, xs[i])
        cand = torch.where(fmap.masks(torch.full((len(rem),), i), rem).unsqueeze(1), base, state)
        cand = cand.contiguous(memory_format=torch.channels_last)
        tg = tgt[i].expand(len(rem))
        with torch.inference_mode():
            ref = overinterp.target_logodds(torch.cat([model(c) for c in cand.split(batch)]), tg)
            best = int(ref.argmax())
            for name, f in picks.items():
                lo = overinterp.target_logodds(torch.cat([f(c).float() for c in cand.split(batch)]), tg)
                agree[name][0] += int(int(lo.argmax()) == best)
                agree[name][1] += int(best in lo.topk(min(8, len(lo))).indices.tolist())
    out["agreement"] = {
        k: {"best_equal": a / states, "float32_best_in_top8": b / states} for k, (a, b) in agree.items()
    }
    log(
        "[levers] agreement with float32 steps: "
        + ", ".join(
            f"{k}: best {v['best_equal']:.2f}, in top-8 {v['float32_best_in_top8']:.2f}"
            for k, v in out["agreement"].items()
        )
    )
    # the engine vs raw forward
    n_keep, n_img = min(120, p), min(8, len(images))
    avail = torch.zeros(n_img, fmap.max_features, dtype=torch.bool)
    for i in range(n_img):
        avail[i, anchor.order_padded[i, p - n_keep : p]] = True
    sub = Problem(forward, xs[:n_img], base, tgt[:n_img], _first_features(fmap, n_img), avail)
    xc = x.contiguous(memory_format=torch.channels_last)
    raw_before = _rate(model, xc)
    t0 = time.perf_counter()
    res = Exact().run(sub, batch_size=batch, progress=False)
    eng = res.stats["evaluations"] / (time.perf_counter() - t0)
    raw = 0.5 * (raw_before + _rate(model, xc))  # before and after: the machine may be shared
    out["engine"] = {"evaluations_per_s": eng, "raw_images_per_s": raw, "ratio": eng / raw}
    log(f"[levers] engine {eng:.0f} evaluations/s vs raw {raw:.0f} images/s: ratio {eng / raw:.2f}")
    return out


def _first_features(fmap, n: int):
    from overinterp.sis.features import FeatureMap

    return FeatureMap(fmap.groups[:n], fmap.num_features[:n], fmap.shared, fmap.is_pixels)


def _num(v: float, fmt: str) -> str:
    """``v`` formatted, or ``–`` when it is NaN (not measured)."""
    return "–" if v != v else format(v, fmt)


def _ci(d: dict[str, float], scale: float = 1.0, digits: int = 3) -> str:
    if not d or d.get("n", 0) == 0 or math.isnan(d["mean"]):
        return "–"
    return f"{scale * d['mean']:+.{digits}f} [{scale * d['lo']:+.{digits}f}, {scale * d['hi']:+.{digits}f}]"


def _meets(row: dict[str, Any], exact_fe: float) -> dict[str, bool]:
    """Each faithfulness target (issue 24) for one method row: met or not (absent: undefined)."""
    out = {
        "cost": row["cost"]["forward_equivalents"] <= TARGETS["cost_fraction"] * exact_fe,
        "d_acc5": row["d_acc5"]["mean"] >= TARGETS["d_acc5"],
        "d_prob5": row["d_prob5"]["mean"] >= TARGETS["d_prob5"]
        and not (row["d_prob5"].get("hi", math.nan) < TARGETS["d_prob5"]),
    }
    for t in ("99", "90"):  # NaN: no image has an SIS at this τ under both methods (not measured, not met)
        if not math.isnan(row[f"sis{t}_ratio"]):
            out[f"sis{t}"] = row[f"sis{t}_ratio"] <= TARGETS["sis_ratio"]
    return out


def _verdict(row: dict[str, Any], exact_fe: float) -> str:
    """The headline's targets cell: what was missed, and which SIS targets could not be measured."""
    ok = _meets(row, exact_fe)
    missed = [k for k, v in ok.items() if not v]
    unmeasured = [f"SIS τ=0.{t}" for t in ("99", "9") if f"sis{t if t == '99' else '90'}" not in ok]
    said = "all measured met" if not missed else "missed: " + ", ".join(missed)
    return said + (f" ({', '.join(unmeasured)}: no image has an SIS)" if unmeasured else "")


def headline(result: dict[str, Any], methods: list[str]) -> list[str]:
    """One row per model and headline method: role, saturation, cost and the quality differences."""
    out = [
        "| model | role | source | images | exact p on own 5% | method | forward-equiv./image (% exact) | "
        "Δ acc. 5% (pts [95% CI]) | Δ mean p 5% [95% CI] | SIS τ=0.99 / exact | SIS τ=0.9 / exact | targets |",
        "|---|---|---|---:|---:|---|---:|---|---|---:|---:|---|",
    ]
    for label, r in result["models"].items():
        exact_fe = r["P"] * (r["P"] + 1) / 2
        p_exact = r["methods"]["exact"]["prob5"]
        for m in methods:
            row = r["methods"].get(m)
            if row is None or "skipped" in row:
                continue
            fe = row["cost"]["forward_equivalents"]
            out.append(
                f"| {label} | {r.get('role', 'unassigned')} | {r.get('source', 'measured here')} | {r['images']} | "
                f"{p_exact:.3f}{' (saturated)' if p_exact >= 0.97 else ''} | {m} | "
                f"{fe:,.0f} ({100 * fe / exact_fe:.2f}%) | "
                f"{_ci(row['d_acc5'], 100, 1)} | {_ci(row['d_prob5'])} | "
                f"{_num(row['sis99_ratio'], '.2f')} | {_num(row['sis90_ratio'], '.2f')} | "
                f"{_verdict(row, exact_fe)} |"
            )
    return out


def markdown(result: dict[str, Any], headline_methods: tuple[str, ...] = ("fast",)) -> str:
    """The frontier as Markdown: the headline table, then one table per model."""
    out = [
        f"CPU: {result['machine']['cpu']}, {result['machine']['threads']} thread(s), torch "
        f"{result['machine']['torch']}, batch {result['batch_size']}."
    ]
    if len(result["models"]) > 1:
        out += [
            "",
            "**Headline** (targets: ≤ 1% of exact's cost; Δ mean p ≥ −0.02 with no interval wholly below; "
            "Δ accuracy ≥ −1 pt; SIS size ≤ 1.25× exact's):",
            "",
        ]
        out += headline(result, list(headline_methods))
    for label, r in result["models"].items():
        out += [
            "",
            f"**{label}** ({r.get('role', 'unassigned')}; {r.get('source', 'measured here')}) — {r['images']} images, "
            f"P = {r['P']} ({r['anchor']}); forward+backward = {r['fb_ratio']['ratio']:.2f} forward passes",
            "",
            "| method | forward-equiv./image | % of exact | s/image | acc. 5% (Δ pts [95% CI]) | "
            "p(class) 5% (Δ [95% CI]) | conf. drop | SIS τ=0.99 (× exact) | SIS τ=0.9 (× exact) | "
            "with SIS 0.99 / 0.9 | screen: bottom-quarter share mean / max, widened steps per image, "
            "ρ(share, Δp) |",
            "|---|---:|---:|---:|---|---|---:|---:|---:|---:|---|",
        ]
        exact_fe = r["P"] * (r["P"] + 1) / 2
        for m, row in r["methods"].items():
            if "skipped" in row:
                out.append(f"| {m} | – | – | – | {row['skipped']} | | | | | | |")
                continue
            fe = row["cost"]["forward_equivalents"]
            sis = [
                f"{row[f'sis{t}']:.1f} (×{row[f'sis{t}_ratio']:.2f})" if not math.isnan(row[f"sis{t}"]) else "–"
                for t in ("99", "90")
            ]
            out.append(
                f"| {m} | {fe:,.0f} | {100 * fe / exact_fe:.2f}% | {row['wall_s_per_image']:.2f} | "
                f"{100 * row['acc5']:.1f}% ({_ci(row['d_acc5'], 100, 1)}) | "
                f"{row['prob5']:.3f} ({_ci(row['d_prob5'])}) | "
                f"{row['drop5']:.3f} | {sis[0]} | {sis[1]} | {row['has_sis99']:.2f} / {row['has_sis90']:.2f} | "
                + (
                    f"{row['screening']['mean_bottom_quarter_share']:.2f} / "
                    f"{row['screening']['max_bottom_quarter_share']:.2f}, "
                    f"{_num(row['screening']['widened_steps_per_image'], '.1f')}, "
                    f"{row['screening']['spearman_share_vs_d_prob5']:+.2f} |"
                    if "screening" in row
                    else "– |"
                )
            )
    for label, lev in result.get("levers", {}).items():
        rates = ", ".join(f"{k} {v:,.0f}" for k, v in lev["images_per_s"].items())
        agree = "; ".join(
            f"{k}: best = float32's best at {v['best_equal']:.0%} of states, float32's best in its top 8 at "
            f"{v['float32_best_in_top8']:.0%}"
            for k, v in lev["agreement"].items()
        )
        e = lev["engine"]
        out += [
            "",
            f"**Levers, {label}** (batch {lev['batch_size']}; kernels: {lev['kernels']}): raw forward images/s "
            f"{rates}. Agreement with float32 steps — {agree}. Engine: {e['evaluations_per_s']:,.0f} exact "
            f"evaluations/s vs {e['raw_images_per_s']:,.0f} raw images/s, ratio {e['ratio']:.2f}.",
        ]
    if "scaling" in result:
        out += [
            "",
            "| P | forward/image | forward+backward/image | s/image | planned (fwd, fwd+bwd) |",
            "|---:|---:|---:|---:|---|",
        ]
        for row in result["scaling"]:
            out.append(
                f"| {row['P']} | {row['forward']:.0f} | {row['forward_backward']:.0f} | "
                f"{row['wall_s_per_image']:.2f} | {row['planned']['forward']}, {row['planned']['forward_backward']} |"
            )
    return "\n".join(out) + "\n"


def figure(result: dict[str, Any], path: Path) -> None:
    """Left: per model (tuning above, held out below) the headline methods' Δ mean p on their own 5%
    subsets with paired 95% intervals against the target; right: cost against that difference for
    every method measured (log cost; dotted: 1% of exact)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heads = list(result.get("headline", ["fast"]))
    given = list(result["models"])
    models = sorted(
        given, key=lambda lab: (str(result["models"][lab].get("role", "")).startswith("held"), given.index(lab))
    )
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(15, 0.42 * len(models) * max(1, len(heads)) + 2.2))
    cmap = plt.get_cmap("tab10")
    offsets = {m: (k - (len(heads) - 1) / 2) * 0.28 for k, m in enumerate(heads)}
    labels = []
    for y, lab in enumerate(models):
        r = result["models"][lab]
        labels.append(f"{lab} ({r.get('role', '?')})")
        for k, m in enumerate(heads):
            row = r["methods"].get(m)
            if row is None or "skipped" in row:
                continue
            d = row["d_prob5"]
            lo, hi = d.get("lo", math.nan), d.get("hi", math.nan)
            err = None if math.isnan(lo) else [[d["mean"] - lo], [hi - d["mean"]]]
            ax.errorbar(
                d["mean"],
                y + offsets[m],
                xerr=err,
                marker="os^D"[k % 4],
                color=cmap(k),
                ms=6,
                capsize=3,
                ls="none",
                label=m if y == 0 or m not in ax.get_legend_handles_labels()[1] else None,
            )
    ax.axvline(TARGETS["d_prob5"], color="tab:red", ls="--", lw=1, label="target (−0.02)")
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_yticks(range(len(models)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("Δ mean p(full-image class) on own 5% subsets, method − exact (paired 95% interval)")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(axis="x", alpha=0.3)
    names = [m for m in dict.fromkeys(m for r in result["models"].values() for m in r["methods"]) if m != "exact"]
    names = [m for m in heads if m in names] + [m for m in names if m not in heads]
    tab = plt.get_cmap("tab20")
    for j, m in enumerate(names):
        pts = [
            (row["cost"]["forward_equivalents"] / (r["P"] * (r["P"] + 1) / 2), row["d_prob5"]["mean"])
            for r in result["models"].values()
            if (row := r["methods"].get(m)) is not None and "skipped" not in row and row["d_prob5"]["mean"] is not None
        ]
        if pts:
            xs, ys = zip(*pts)
            ax2.plot(xs, ys, marker="os^Dv<>P*Xhp"[j % 12], color=tab(j % 20), ls="none", ms=6, label=m)
    ax2.set_xscale("log")
    ax2.axvline(0.01, color="grey", ls=":", lw=1)
    ax2.axhline(TARGETS["d_prob5"], color="tab:red", ls="--", lw=1)
    ax2.axhline(0.0, color="grey", lw=0.8)
    ax2.set_xlabel("cost, fraction of exact's (log; dotted: 1%)")
    ax2.set_ylabel("Δ mean p on own 5% subsets")
    ax2.legend(fontsize=7, loc="lower right", ncol=2, title="method (one point per model)", title_fontsize=7)
    fig.suptitle("fast against exact per pixel, 32×32 images (bench/frontier.py)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    tmp.replace(path)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--merge",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="only merge earlier runs' JSON files (one per model, e.g. run in parallel) into --out",
    )
    ap.add_argument(
        "--job",
        action="append",
        help="LABEL=DIR of an exact anchor job, or LABEL=TRACE.pt@DIR:PATCH (repeat)",
    )
    ap.add_argument("--methods", default=DEFAULT, help=f"comma list of {', '.join(METHODS)}")
    ap.add_argument(
        "--define",
        action="append",
        default=[],
        metavar="LABEL=NAME[:KEY=VALUE…]",
        help="add a method setting to the known ones, e.g. fast-w48=fast:width=48:step_fraction=0.08 (repeat)",
    )
    ap.add_argument("--images", type=int, help="at most this many anchored images per model")
    ap.add_argument(
        "--recorded",
        action="append",
        default=[],
        metavar="JSON:LABEL[,LABEL…]",
        help="also list these models' rows from an earlier run's JSON, marked as recorded (for models whose "
        "exact anchors are not here to rerun)",
    )
    ap.add_argument("--headline", default="fast", help="comma list of the methods in the headline table")
    ap.add_argument("--cache", type=Path, help="folder of per-image method traces, reused across runs")
    ap.add_argument(
        "--precompute",
        action="store_true",
        help="only fill --cache for the jobs' planned positions (before their exact anchors are done)",
    )
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--scaling", action="store_true", help="also measure the recommended method at P = 256, 1024, 4096")
    ap.add_argument(
        "--levers",
        type=int,
        default=0,
        metavar="STATES",
        help="also measure bf16/int8 throughput and agreement at this many states, and the engine ratio",
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "frontier.json")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs" / "frontier.png")
    args = ap.parse_args()
    if args.merge:
        result = json.loads(args.merge[0].read_text())
        for extra in args.merge[1:]:
            more = json.loads(extra.read_text())
            for label, r in more["models"].items():  # the same model from several runs: methods merged
                if label in result["models"]:
                    result["models"][label]["methods"].update(r["methods"])
                else:
                    result["models"][label] = r
            result.setdefault("levers", {}).update(more.get("levers", {}))
            if "scaling" in more:
                result["scaling"] = more["scaling"]
        add_recorded(result, args.recorded)
        result["headline"] = args.headline.split(",")
        write_outputs(result, args.out, args.figure, print)
        return 0
    if not args.job:
        ap.error("give --job (or --merge)")
    torch.set_num_threads(args.threads)
    global CACHE
    CACHE = args.cache
    if args.precompute and not args.cache:
        ap.error("--precompute needs --cache")
    for d in args.define:
        label, _, body = d.partition("=")
        name, *pairs = body.split(":")
        if not label or not name or any("=" not in kv for kv in pairs):
            ap.error(f"--define {d!r}: expected LABEL=NAME[:KEY=VALUE…]")
        METHODS[label] = (name, {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in pairs)})
        make_method(name, **METHODS[label][1])  # refused here, before any work, when the setting is invalid
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; known: {', '.join(METHODS)}")

    def log(msg: str) -> None:
        print(msg, flush=True)

    if args.precompute:
        for spec in args.job:
            label, _, d = spec.partition("=")
            precompute(label, d, methods, args.images, args.batch_size, log)
        return 0

    result: dict[str, Any] = {
        "machine": {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__, "kernels": cpu_kernels()},
        "batch_size": args.batch_size,
        "models": {},
    }
    for spec in args.job:
        label, _, d = spec.partition("=")
        result["models"][label] = run_model(label, d, methods, args.images, args.batch_size, log)
    if args.scaling:
        first = args.job[0].partition("=")[2]
        result["scaling"] = scaling(first, (16, 32, 64), args.batch_size, log)
    if args.levers:
        result["levers"] = {
            spec.partition("=")[0]: levers(spec.partition("=")[2], args.batch_size, args.levers, log)
            for spec in args.job
        }
    add_recorded(result, args.recorded)
    result["headline"] = args.headline.split(",")
    write_outputs(result, args.out, args.figure, log)
    return 0


def add_recorded(result: dict[str, Any], specs: list[str]) -> None:
    """Models from earlier runs' JSON (``PATH:LABEL,…``), each marked with where its numbers come from."""
    for spec in specs:
        path, _, labels = spec.rpartition(":")
        old = json.loads(Path(path).read_text())
        cpu = old.get("machine", {}).get("cpu", "unknown CPU")
        cap = old.get("machine", {}).get("kernels", {}).get("capability", "")
        for label in labels.split(","):
            if label not in old["models"]:
                raise SystemExit(f"--recorded {spec}: no model {label!r} in {path} (has {', '.join(old['models'])})")
            r = dict(old["models"][label])
            r["methods"] = relabel_recorded(r.get("methods", {}))
            r["role"] = ROLES.get(label, "unassigned")
            r["source"] = f"recorded in {Path(path).name} ({cpu} {cap}); anchors not recomputed here"
            result["models"][label] = r


def relabel_recorded(rows: dict[str, Any]) -> dict[str, Any]:
    """A recorded model's method rows under today's labels: a row whose recorded setting is not what
    its label means today (``fast`` before round 2's default) moves to the label that means it now
    (``fast-r1``), or is marked ``LABEL (recorded setting)``; never shown as today's setting."""
    from overinterp.sis.methods import method_from_description

    today = {lab: make_method(n, **p) for lab, (n, p) in METHODS.items()}
    out: dict[str, Any] = {}
    for label, row in rows.items():
        desc = row.get("method") if isinstance(row, dict) else None
        if desc is None or label not in today or method_from_description(desc) == today[label]:
            out[label] = row
            continue
        same = [lab for lab, m in today.items() if m == method_from_description(desc)]
        out[same[0] if same else f"{label} (recorded setting)"] = row
    return out


def write_outputs(result: dict[str, Any], out: Path, fig: Path, log: Callable[[str], None]) -> None:
    """JSON (atomically), the Markdown tables beside it, and the figure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)
    figure(result, fig)
    table = markdown(result, tuple(result.get("headline", ["fast"])))
    out.with_suffix(".md").write_text(table)
    print(table)
    log(f"wrote {out}, {out.with_suffix('.md')} and {fig}")


if __name__ == "__main__":
    sys.exit(main())
