"""Command-line subcommands for ImageNet-scale, robust and black-box models
(registered by :mod:`overinterp.cli`):

    overinterp imagenet-sis --model inception_v3 --weights inception_v3_google-0cc3c7bd.pth \\
        --data /data/imagenet/val --out runs/imagenet-sis          # §4.1.1, Figures 3, 4, S6
    overinterp robust-sis --model resnet20@resnet20-cifar10.th?preprocessing=imagenet \\
        --robust-model robustbench:Carmon2019Unlabeled --data cifar10:test --out runs/robust \\
        --results results.csv                                     # §4.5, Figure 1 "Adv. Robust"
    overinterp blackbox-sis --tflite mobilenet_v1_0.25_128_quant.tflite --labels imagenet_labels.txt \\
        --image parrot.jpg --patch 8 --ratio 0.9 --out /tmp/bb    # any forward-only model
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import torch

__all__ = ["add_parsers", "HANDLERS"]


def _add_imagenet(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("imagenet-sis", help="SIS of confidently classified ImageNet validation images (§4.1.1)")
    p.add_argument("--model", default="inception_v3", help="torchvision (or timm) model name; default inception_v3")
    p.add_argument("--weights", help="weights file; default: the torch hub cache; 'random' for timing only")
    p.add_argument("--source", default="auto", choices=["auto", "torchvision", "timm"])
    p.add_argument("--data", type=Path, required=True, help="ImageNet validation folder (synset folders or flat files)")
    p.add_argument("--synset-file", type=Path, help="LOC_synset_mapping.txt / synset_words.txt (default: searched)")
    p.add_argument("--ground-truth", type=Path, help="devkit ILSVRC2012_validation_ground_truth.txt (flat layout)")
    p.add_argument("--meta-mat", type=Path, help="devkit meta.mat (needs SciPy)")
    p.add_argument("--synsets-by-id", type=Path, help="instead of meta.mat: synsets in ILSVRC2012_ID order")
    p.add_argument("--out", type=Path, required=True, help="output folder (rerun with the same one to resume)")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--confidence", type=float, default=0.9, help="keep images with f ≥ this")
    p.add_argument("--threshold", type=float, default=0.9, help="SIS threshold τ")
    p.add_argument("--k", type=int, default=100, help="Batched Gradient block size (pixels per iteration)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="order in which validation images are drawn")
    p.add_argument("--correct-only", action="store_true", help="only correctly classified images")
    p.add_argument("--crop", type=int, help="input size (default: the model's, 299 for Inception-v3)")
    p.add_argument("--resize", type=int, help="shorter side before the centre crop (default: the model's, 342)")
    p.add_argument("--panels", type=int, default=8, help="images shown in panels.png")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--no-progress", action="store_true")


def _cmd_imagenet(args: argparse.Namespace) -> int:
    from overinterp.data.imagenet import open_imagenet_val
    from overinterp.experiments.imagenet import ImageNetSISConfig, run_imagenet_sis
    from overinterp.models.external import imagenet_classifier

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = imagenet_classifier(args.model, args.weights, source=args.source)
    val = open_imagenet_val(args.data, synset_file=args.synset_file, ground_truth=args.ground_truth,
                            meta_mat=args.meta_mat, synsets_by_id=args.synsets_by_id)
    config = ImageNetSISConfig(
        num_images=args.num_images, confidence=args.confidence, threshold=args.threshold, k=args.k,
        batch_size=args.batch_size, seed=args.seed, correct_only=args.correct_only,
        crop=args.crop or model.input_size, resize=args.resize or model.resize, panels=args.panels,
    )
    print(f"imagenet-sis: {model.name} ({model.weights}), {len(val)} validation images in {val.root} "
          f"({val.layout}), {config.crop}×{config.crop}, τ = {config.threshold}, k = {config.k}, {device}",
          file=sys.stderr)
    run_imagenet_sis(model, val, args.out, config, device=device, progress=not args.no_progress)
    return 0


def _add_robust(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("robust-sis", help="mean SIS size of robust vs standard CIFAR-10 models (§4.5)")
    p.add_argument("--model", action="append", default=[], metavar="SPEC",
                   help="a standard model: [LABEL=]NAME[@CKPT][?opt=v&…], a checkpoint, an ensemble .json, "
                   "robustbench:NAME or import:pkg.module:Class[@CKPT][?kwargs] (repeatable)")
    p.add_argument("--robust-model", action="append", default=[], metavar="SPEC",
                   help="an adversarially robust model, same forms (repeatable)")
    p.add_argument("--data", default="cifar10:test", help="dataset NAME[:SPLIT][@ROOT] (default cifar10:test)")
    p.add_argument("--root", type=Path)
    p.add_argument("--download", action="store_true")
    p.add_argument("--scan", type=int, help="consider only the first N images of the dataset")
    p.add_argument("--limit", type=int, default=100, help="SIS for at most this many confident images per model")
    p.add_argument("--threshold", type=float, default=0.99)
    p.add_argument("--correct-only", action="store_true")
    p.add_argument("--method", default="exact", choices=["exact", "gradient", "kstep"])
    p.add_argument("--k", type=int, help="gradient: block size (default 1); kstep: removals per step (default 16)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--results", type=Path, help="append rows to this results CSV")
    p.add_argument("--experiment", default="robust-sis")
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-progress", action="store_true")


def _method(name: str, k: int | None, num_features: int):
    from overinterp.experiments.imagenet import check_block_size
    from overinterp.sis.methods import BatchedGradient, Exact, KStep

    if name == "exact":
        if k is not None:
            raise ValueError("--k applies to --method gradient or kstep only")
        return Exact()
    kk = k if k is not None else (1 if name == "gradient" else 16)
    check_block_size(kk, num_features)
    return BatchedGradient(kk) if name == "gradient" else KStep(kk)


def _cmd_robust(args: argparse.Namespace) -> int:
    from overinterp.data import load_dataset
    from overinterp.experiments.robust import ROBUST_GROUP, STANDARD_GROUP, load_model_spec, run_robust_sis

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.model and not args.robust_model:
        raise ValueError("give models with --model (standard) and/or --robust-model")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    data = load_dataset(args.data, root=args.root, download=args.download, progress=not args.no_progress)
    if args.scan is not None:
        data = data.subset(slice(0, args.scan))
    specs = [load_model_spec(s, STANDARD_GROUP) for s in args.model]
    specs += [load_model_spec(s, ROBUST_GROUP) for s in args.robust_model]
    method = _method(args.method, args.k, data.images.shape[2] * data.images.shape[3])
    rows = run_robust_sis(specs, data, args.out, threshold=args.threshold, limit=args.limit, method=method,
                          correct_only=args.correct_only, batch_size=args.batch_size, device=device,
                          results=args.results, experiment=args.experiment, progress=not args.no_progress)
    print(f"{'model':<24} {'group':<12} {'n':>5} {'mean SIS':>10} {'± std':>8}")
    for r in rows:
        print(f"{r['model']:<24} {r['group']:<12} {r['with_sis']:>5} {100 * r['sis_fraction_mean']:>9.2f}% "
              f"{100 * r['sis_fraction_std']:>7.2f}%")
    print(f"wrote {args.out / 'summary.json'} and {args.out / 'summary.csv'}"
          + (f"; appended to {args.results}" if args.results else ""))
    return 0


def _add_blackbox(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("blackbox-sis", help="SIS of a forward-only model (TFLite) on photos, over pixel groups")
    p.add_argument("--tflite", type=Path, required=True, help="a .tflite image classifier")
    p.add_argument("--labels", type=Path, help="class names, one per line")
    p.add_argument("--image", type=Path, action="append", required=True, help="photo (repeatable)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--patch", type=int, default=8, help="feature = patch×patch pixels (default 8)")
    group.add_argument("--superpixels", type=int, help="feature = one of about N superpixels instead")
    p.add_argument("--method", default="kstep", choices=["exact", "kstep"])
    p.add_argument("--k", type=int, help="kstep: removals per step (default 16)")
    tgroup = p.add_mutually_exclusive_group()
    tgroup.add_argument("--ratio", type=float, default=0.9, help="τ = ratio · f(x) per image (default 0.9)")
    tgroup.add_argument("--threshold", type=float, help="a fixed τ instead")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", type=Path, required=True, help="folder for trace.pt, panels.png, summary.json")
    p.add_argument("--threads", type=int, default=1, help="interpreter threads")
    p.add_argument("--no-progress", action="store_true")


def _cmd_blackbox(args: argparse.Namespace) -> int:
    import overinterp

    from overinterp.analysis.panels import save_sis_panels
    from overinterp._atomic import atomic_write_text
    from overinterp.models.blackbox import tflite_classifier
    from overinterp.data.imagenet import load_photo
    from overinterp.sis.relative import find_sis_relative
    from overinterp.sis.superpixels import superpixel_features

    model = tflite_classifier(args.tflite, labels=args.labels, num_threads=args.threads)
    h, w = model.input_size
    images = torch.stack([load_photo(p, (h, w)) for p in args.image])
    if args.superpixels is not None:
        features = superpixel_features(images, args.superpixels)
        counts = [int(f.max()) + 1 for f in features]
    else:
        if args.patch < 1:
            raise ValueError(f"--patch must be ≥ 1, got {args.patch}")
        features = overinterp.patch_features(h, w, args.patch)
        counts = [int(features.max()) + 1] * len(images)
    method = _method(args.method, args.k, min(counts))
    calls0, t0 = model.calls, time.perf_counter()
    trace = overinterp.backselect(model, images, method=method, features=features, batch_size=args.batch_size,
                                  progress=not args.no_progress)
    seconds = time.perf_counter() - t0
    if args.threshold is not None:
        res = trace.find_sis(args.threshold, model, images)
        taus = [args.threshold] * len(images)
    else:
        res = find_sis_relative(trace, args.ratio, model, images)
        taus = res.thresholds.tolist()
    passes = model.calls - calls0
    trace.meta.update({"images": [str(p) for p in args.image], "model": str(args.tflite)})
    args.out.mkdir(parents=True, exist_ok=True)
    trace.save(args.out / "trace.pt")
    names = model.class_names
    keep = trace.sis_mask(res)
    rows, titles = [], []
    for i, s in enumerate(res):
        t = int(trace.target[i])
        cls = names[t] if names else str(t)
        f = float(torch.sigmoid(trace.full_logodds[i].double()))
        size = None if s is None else int(s.numel())
        rows.append({"image": str(args.image[i]), "class": cls, "target": t, "confidence": f, "threshold": taus[i],
                     "features": counts[i], "sis_features": size,
                     "sis_fraction": None if s is None else float(keep[i].float().mean()),
                     "sis_confidence": None if s is None else float(torch.sigmoid(res.logodds[i]))})
        titles.append(f"{cls.split(',')[0][:18]}\nf={f:.2f}, SIS {size}/{counts[i]}")
    panels = save_sis_panels(args.out / "panels.png", images, keep, titles)
    summary = {"model": str(args.tflite), "method": method.describe(), "forward_passes": passes,
               "seconds": seconds, "ratio": None if args.threshold is not None else args.ratio,
               "threshold": args.threshold, "panels": [str(p) for p in panels], "images": rows}
    atomic_write_text(args.out / "summary.json", json.dumps(summary, indent=1))
    for r in rows:
        print(f"{r['image']}: {r['class']} (f = {r['confidence']:.3f}), τ = {r['threshold']:.3f}: SIS of "
              f"{r['sis_features']} of {r['features']} features, f(SIS) = {r['sis_confidence']}")
    print(f"{passes} forward passes in {seconds:.1f} s; wrote {args.out}/trace.pt, {panels[0]}, summary.json")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register imagenet-sis, robust-sis and blackbox-sis."""
    for add in (_add_imagenet, _add_robust, _add_blackbox):
        add(sub)
    for name, handler in HANDLERS.items():
        sub.choices[name].set_defaults(func=handler)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "imagenet-sis": _cmd_imagenet,
    "robust-sis": _cmd_robust,
    "blackbox-sis": _cmd_blackbox,
}
