"""The ImageNet experiment of the paper (§4.1.1, Figures 3, 4 and S6).

Random ImageNet validation images that the model classifies with confidence
``f ≥ confidence`` (0.9), one SIS each at ``τ`` (0.9) by Batched Gradient
BackSelect (``k = 100`` pixels per block, the paper's setting), batches of 32
images. Outputs in ``out_dir``:

* ``selection.json`` — the chosen images (validation indices, files, labels,
  confidences), fixed before any SIS work so a rerun picks the same ones;
* ``traces/batch_NNNN.pt`` — one trace per batch (``overinterp inspect`` reads
  them) and ``sis/batch_NNNN.pt`` with its verified SIS, written atomically;
  a rerun skips every batch whose two files exist (resumable per batch);
* ``panels.png`` — Figure 3/S6 panels for the first images (image, SIS location
  in red, SIS only);
* ``heatmap.png`` and ``heatmap.pt`` — Figure 4: the fraction of images whose
  SIS contains each pixel;
* ``summary.json`` — settings, counts, SIS size statistics, timing, per image.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from overinterp._atomic import atomic_torch_save, atomic_write_text
from overinterp.analysis import location_frequency, save_heatmap
from overinterp.analysis.panels import save_sis_panels
from overinterp.data.imagenet import ImageNetVal
from overinterp.errors import UserInputError
from overinterp.models.classifier import Classifier
from overinterp.models.predict import predict_logits
from overinterp.sis.backselect import backselect
from overinterp.sis.methods import BatchedGradient
from overinterp.sis.methods.base import check_block_size
from overinterp.sis.scoring import check_threshold
from overinterp.sis.trace import BackselectTrace

__all__ = ["ImageNetSISConfig", "select_confident", "run_imagenet_sis", "check_block_size"]

SELECTION_VERSION = 1


@dataclass(frozen=True)
class ImageNetSISConfig:
    """Settings of :func:`run_imagenet_sis` (defaults: the paper's)."""

    num_images: int = 1000
    confidence: float = 0.9
    threshold: float = 0.9
    k: int = 100
    batch_size: int = 32
    seed: int = 0
    correct_only: bool = False
    crop: int = 299
    resize: int | None = 342
    panels: int = 8

    def check(self) -> None:
        if self.num_images < 1:
            raise ValueError(f"num_images must be ≥ 1, got {self.num_images}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        check_threshold(self.confidence)
        check_threshold(self.threshold)
        check_block_size(self.k, self.crop * self.crop)


def _classify(model: Classifier, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Float pixels ``(B, C, H, W)`` → ``(B,)`` confidences (float64) and predictions, on the CPU."""
    logits = predict_logits(model, pixels, batch_size=pixels.shape[0], device=pixels.device, out_device=None)
    conf, pred = torch.softmax(logits.double(), dim=1).max(1)
    return conf.cpu(), pred.cpu()


def select_confident(
    model: Classifier,
    val: ImageNetVal,
    config: ImageNetSISConfig,
    device: torch.device,
    progress: bool = True,
) -> dict[str, Any]:
    """Scan the validation set in a seeded random order; keep the first ``num_images``
    classified with ``f ≥ confidence`` (and correctly, with ``correct_only``).

    Returns a JSON-able dict: ``indices``, ``files``, ``labels``, ``predictions``, ``confidences``, ``scanned``.
    """
    g = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(val), generator=g).tolist()
    chosen: dict[str, list[Any]] = {"indices": [], "files": [], "labels": [], "predictions": [], "confidences": []}
    scanned = 0
    bar = tqdm(total=config.num_images, desc="select", unit="img", disable=not progress)
    try:
        for s in range(0, len(order), config.batch_size):
            idx = order[s : s + config.batch_size]
            data = val.load(idx, crop=config.crop, resize=config.resize)
            conf, pred = _classify(model, data.pixels().to(device))
            scanned += len(idx)
            for r, i in enumerate(idx):
                ok = float(conf[r]) >= config.confidence
                if config.correct_only:
                    ok = ok and int(pred[r]) == int(data.labels[r])
                if ok and len(chosen["indices"]) < config.num_images:
                    chosen["indices"].append(i)
                    chosen["files"].append(str(val.files[i]))
                    chosen["labels"].append(int(data.labels[r]))
                    chosen["predictions"].append(int(pred[r]))
                    chosen["confidences"].append(float(conf[r]))
                    bar.update(1)
            if len(chosen["indices"]) >= config.num_images:
                break
    finally:
        bar.close()
    return {**chosen, "scanned": scanned}


def _settings(model: Classifier, config: ImageNetSISConfig, val: ImageNetVal) -> dict[str, Any]:
    from overinterp.results import model_fingerprint

    return {
        "version": SELECTION_VERSION,
        "model": model.name,
        "fingerprint": model_fingerprint(model),
        "data": str(val.root),
        "num_images": config.num_images,
        "confidence": config.confidence,
        "seed": config.seed,
        "correct_only": config.correct_only,
        "crop": config.crop,
        "resize": config.resize,
    }


def _load_or_select(model, val, config, device, out: Path, progress: bool, log) -> dict[str, Any]:
    path = out / "selection.json"
    settings = _settings(model, config, val)
    if path.is_file():
        sel = json.loads(path.read_text(encoding="utf-8"))
        if sel.get("settings") != settings:
            raise UserInputError(
                f"{path} was made with other settings ({sel.get('settings')}); use another folder or "
                "delete it to start over",
                argument="out_dir",
            )
        log(f"resuming: {len(sel['indices'])} images selected earlier ({path})")
        return sel
    t0 = time.perf_counter()
    sel = select_confident(model, val, config, device, progress)
    sel["settings"] = settings
    sel["seconds"] = time.perf_counter() - t0
    atomic_write_text(path, json.dumps(sel, indent=1))
    log(
        f"selected {len(sel['indices'])} of {sel['scanned']} scanned images with f ≥ {config.confidence} "
        f"({sel['seconds']:.1f} s)"
    )
    return sel


def _batch_done(trace_path: Path, sis_path: Path, indices: list[int]) -> bool:
    if not (trace_path.is_file() and sis_path.is_file()):
        return False
    try:
        saved = torch.load(sis_path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable file is redone
        return False
    return isinstance(saved, dict) and saved.get("indices") == indices


def run_imagenet_sis(
    model: Classifier,
    val: ImageNetVal,
    out_dir: str | Path,
    config: ImageNetSISConfig = ImageNetSISConfig(),
    *,
    device: str | torch.device = "cpu",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the experiment (see the module doc); returns the summary written to ``summary.json``."""
    config.check()
    if model.training:
        model.eval()
    device = torch.device(device)
    model = model.to(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sel = _load_or_select(model, val, config, device, out, progress, log)
    indices: list[int] = list(sel["indices"])
    if not indices:
        raise ValueError(
            f"no image of {sel['scanned']} scanned reached confidence {config.confidence}; is the model trained "
            "(real weights, not random ones) and is the preprocessing right?"
        )
    method = BatchedGradient(config.k)
    batches = [indices[s : s + config.batch_size] for s in range(0, len(indices), config.batch_size)]
    (out / "traces").mkdir(exist_ok=True)
    (out / "sis").mkdir(exist_ok=True)
    done_before = 0
    t_start = time.perf_counter()
    bar = tqdm(total=len(indices), desc=f"SIS (gradient k={config.k})", unit="img", disable=not progress, smoothing=0.1)
    try:
        for b, idx in enumerate(batches):
            tpath, spath = out / "traces" / f"batch_{b:04d}.pt", out / "sis" / f"batch_{b:04d}.pt"
            if _batch_done(tpath, spath, idx):
                done_before += len(idx)
                bar.update(len(idx))
                continue
            data = val.load(idx, crop=config.crop, resize=config.resize)
            images = data.pixels().to(device)
            t0 = time.perf_counter()
            trace = backselect(
                model, images, method=method, batch_size=config.batch_size, progress=False, labels=data.labels
            )
            res = trace.find_sis(config.threshold, model, images, batch_size=config.batch_size)
            trace.meta.update({"indices": idx, "files": data.meta["files"], "seconds": time.perf_counter() - t0})
            trace.save(tpath)
            atomic_torch_save(
                {
                    "indices": idx,
                    "threshold": config.threshold,
                    "sis": [None if s is None else s.clone() for s in res.sis],
                    "logodds": res.logodds.clone(),
                    "extended": res.extended,
                    "seconds": time.perf_counter() - t0,
                },
                spath,
            )
            bar.update(len(idx))
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    return _finish(model, val, out, config, sel, batches, seconds, done_before, log)


def _finish(model, val, out: Path, config, sel, batches, seconds, done_before, log) -> dict[str, Any]:
    masks, valid, per_image, passes, sis_seconds = [], [], [], 0, 0.0
    names = model.class_names or val.classes
    for b, idx in enumerate(batches):
        trace = BackselectTrace.load(out / "traces" / f"batch_{b:04d}.pt")
        saved = torch.load(out / "sis" / f"batch_{b:04d}.pt", map_location="cpu", weights_only=True)
        sis = saved["sis"]
        masks.append(trace.sis_mask(sis))
        valid += [s is not None for s in sis]
        passes += int(trace.meta.get("forward_backward_passes", 0))
        sis_seconds += float(saved.get("seconds", 0.0))
        p = trace.num_features.tolist()
        for r, i in enumerate(idx):
            s = sis[r]
            t = int(trace.target[r])
            per_image.append(
                {
                    "index": i,
                    "file": trace.meta["files"][r],
                    "label": int(trace.labels[r]),
                    "target": t,
                    "class": names[t] if names and t < len(names) else str(t),
                    "confidence": float(torch.sigmoid(trace.full_logodds[r].double())),
                    "sis_size": None if s is None else int(s.numel()),
                    "sis_fraction": None if s is None else s.numel() / p[r],
                    "sis_confidence": None if s is None else float(torch.sigmoid(saved["logodds"][r])),
                }
            )
    keep = torch.cat(masks)
    ok = torch.tensor(valid, dtype=torch.bool)
    freq = location_frequency(keep, ok)
    atomic_torch_save({"frequency": freq, "n": int(ok.sum())}, out / "heatmap.pt")
    heat = save_heatmap(
        freq,
        out / "heatmap.png",
        title=f"{model.name}: SIS pixel frequency ({int(ok.sum())} images, τ={config.threshold})",
    )
    panel_rows = [r for r, v in enumerate(valid) if v][: config.panels]
    panel_files: list[str] = []
    if panel_rows:
        chosen = [per_image[r]["index"] for r in panel_rows]
        data = val.load(chosen, crop=config.crop, resize=config.resize)
        titles = [
            f"{per_image[r]['class'].split(',')[0][:18]}\nf={per_image[r]['confidence']:.3f}, "
            f"SIS {100 * per_image[r]['sis_fraction']:.1f}%"
            for r in panel_rows
        ]
        panel_files = [str(p) for p in save_sis_panels(out / "panels.png", data.images, keep[panel_rows], titles)]
    fractions = [d["sis_fraction"] for d in per_image if d["sis_fraction"] is not None]
    summary = {
        "experiment": "imagenet-sis",
        "model": model.name,
        "weights": getattr(model, "weights", None),
        "settings": {
            **sel["settings"],
            "threshold": config.threshold,
            "k": config.k,
            "batch_size": config.batch_size,
            "method": BatchedGradient(config.k).describe(),
        },
        "scanned": sel["scanned"],
        "selected": len(per_image),
        "with_sis": int(ok.sum()),
        "sis_fraction_mean": statistics.fmean(fractions) if fractions else math.nan,
        "sis_fraction_median": statistics.median(fractions) if fractions else math.nan,
        "sis_fraction_std": statistics.stdev(fractions) if len(fractions) > 1 else 0.0,
        "forward_backward_passes": passes,
        "sis_seconds": sis_seconds,
        "seconds_this_run": seconds,
        "resumed_images": done_before,
        "files": {
            "heatmap": [str(p) for p in heat],
            "panels": panel_files,
            "traces": str(out / "traces"),
            "selection": str(out / "selection.json"),
        },
        "images": per_image,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1, default=float))
    log(
        f"{summary['with_sis']} SIS at τ = {config.threshold}: mean size {100 * summary['sis_fraction_mean']:.2f}% "
        f"of pixels (median {100 * summary['sis_fraction_median']:.2f}%); wrote {out / 'summary.json'}"
    )
    return summary


def stack_images(images: Sequence[Tensor]) -> Tensor:
    """Same-size ``(C, H, W)`` images → ``(N, C, H, W)``; mixed sizes are an error that says how to fix them."""
    sizes = sorted({tuple(x.shape) for x in images})
    if len(sizes) > 1:
        raise ValueError(
            f"images have mixed sizes {sizes[:4]}{' …' if len(sizes) > 4 else ''}; resize them to the model's "
            "input size first, e.g. overinterp.data.imagenet.resize_images(images, 299)"
        )
    if not sizes:
        raise ValueError("no images")
    return torch.stack(list(images))
