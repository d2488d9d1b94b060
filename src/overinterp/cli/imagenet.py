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
import sys
from pathlib import Path

import torch

from overinterp.cli import _common as c

__all__ = ["add_parsers"]


def _add_imagenet(sub: c.Subparsers) -> None:
    p = sub.add_parser("imagenet-sis", help="SIS of confidently classified ImageNet validation images (§4.1.1)")
    p.add_argument("--model", default="inception_v3", help="torchvision (or timm) model name; default inception_v3")
    p.add_argument("--weights", help="weights file; default: the torch hub cache; 'random' for timing only")
    p.add_argument(
        "--source",
        default="auto",
        choices=["auto", "torchvision", "timm"],
        help="where --model comes from (default auto: torchvision, else timm)",
    )
    p.add_argument("--data", type=Path, required=True, help="ImageNet validation folder (synset folders or flat files)")
    p.add_argument("--synset-file", type=Path, help="LOC_synset_mapping.txt / synset_words.txt (default: searched)")
    p.add_argument("--ground-truth", type=Path, help="devkit ILSVRC2012_validation_ground_truth.txt (flat layout)")
    p.add_argument("--meta-mat", type=Path, help="devkit meta.mat (needs SciPy)")
    p.add_argument("--synsets-by-id", type=Path, help="instead of meta.mat: synsets in ILSVRC2012_ID order")
    p.add_argument("--out", type=c.output_dir, required=True, help="output folder (rerun with the same one to resume)")
    p.add_argument("--num-images", type=c.positive_int, default=1000, help="confident images to explain (default 1000)")
    p.add_argument("--confidence", type=c.fraction, default=0.9, help="keep images with f ≥ this")
    p.add_argument("--threshold", type=c.fraction, default=0.9, help="SIS threshold τ")
    p.add_argument("--k", type=c.positive_int, default=100, help="Batched Gradient block size (pixels per iteration)")
    p.add_argument("--batch-size", type=c.positive_int, default=32, help="images per forward call (default 32)")
    p.add_argument("--seed", type=int, default=0, help="order in which validation images are drawn")
    p.add_argument("--correct-only", action="store_true", help="only correctly classified images")
    p.add_argument("--crop", type=c.image_side, help="input size (default: the model's, 299 for Inception-v3)")
    p.add_argument(
        "--resize", type=c.image_side, help="shorter side before the centre crop (default: the model's, 342)"
    )
    p.add_argument(
        "--transform",
        choices=["torchvision", "paper"],
        default="torchvision",
        help="evaluation transform: torchvision (default; the weights' own, Inception-v3 342 → 299, which cuts "
        "the border off) or paper (the authors': shorter side resized straight to the crop, 299 → 299)",
    )
    p.add_argument("--panels", type=c.nonnegative_int, default=8, help="images shown in panels.png")
    c.add_device(p)
    c.add_threads(p)
    c.add_progress(p)
    p.set_defaults(func=_cmd_imagenet)


def _cmd_imagenet(args: argparse.Namespace) -> int:
    from overinterp.data.imagenet import open_imagenet_val
    from overinterp.experiments.imagenet import ImageNetSISConfig, run_imagenet_sis
    from overinterp.models.external import imagenet_classifier

    c.apply_threads(args)
    device = c.device(args)
    model = imagenet_classifier(args.model, args.weights, source=args.source, transform=args.transform)
    crop = args.crop or model.input_size
    val = open_imagenet_val(
        args.data,
        synset_file=args.synset_file,
        ground_truth=args.ground_truth,
        meta_mat=args.meta_mat,
        synsets_by_id=args.synsets_by_id,
    )
    config = ImageNetSISConfig(
        num_images=args.num_images,
        confidence=args.confidence,
        threshold=args.threshold,
        k=args.k,
        batch_size=args.batch_size,
        seed=args.seed,
        correct_only=args.correct_only,
        crop=crop,
        resize=args.resize or (crop if args.transform == "paper" else model.resize),
        panels=args.panels,
    )
    print(
        f"imagenet-sis: {model.name} ({model.weights}), {len(val)} validation images in {val.root} "
        f"({val.layout}), {config.crop}×{config.crop}, τ = {config.threshold}, k = {config.k}, {device}",
        file=sys.stderr,
    )
    run_imagenet_sis(model, val, args.out, config, device=device, progress=not args.no_progress)
    return 0


def _add_robust(sub: c.Subparsers) -> None:
    p = sub.add_parser("robust-sis", help="mean SIS size of robust vs standard CIFAR-10 models (§4.5)")
    p.add_argument(
        "--model", action="append", default=[], metavar="SPEC", help="a standard model (repeatable); " + c.MODEL_HELP
    )
    p.add_argument(
        "--robust-model",
        action="append",
        default=[],
        metavar="SPEC",
        help="an adversarially robust model, same forms (repeatable)",
    )
    p.add_argument("--data", default="cifar10:test", help="default cifar10:test; " + c.DATASET_HELP)
    p.add_argument("--root", type=Path, help="dataset folder for a --data without @ROOT")
    p.add_argument("--download", action="store_true", help="fetch missing official dataset files")
    p.add_argument("--scan", type=c.positive_int, help="consider only the first N images of the dataset")
    p.add_argument(
        "--limit", type=c.positive_int, default=100, help="SIS for at most this many confident images per model"
    )
    p.add_argument("--threshold", type=c.fraction, default=0.99, help="SIS threshold τ (default 0.99)")
    p.add_argument("--correct-only", action="store_true", help="only correctly classified images")
    c.add_method_options(p)
    p.add_argument("--batch-size", type=c.positive_int, default=64, help="candidates per forward call (default 64)")
    p.add_argument("--out", type=c.output_dir, required=True, help="output folder (traces/, summary.json, summary.csv)")
    p.add_argument("--results", type=c.output_file, help="append rows to this results CSV")
    p.add_argument("--experiment", default="robust-sis", help="experiment column of the results rows")
    c.add_device(p)
    c.add_threads(p)
    c.add_progress(p)
    p.set_defaults(func=_cmd_robust)


def _cmd_robust(args: argparse.Namespace) -> int:
    from overinterp.data.specs import open_dataset
    from overinterp.experiments.robust import ROBUST_GROUP, STANDARD_GROUP, load_robust_model, run_robust_sis

    c.apply_threads(args)
    if not args.model and not args.robust_model:
        raise ValueError("give models with --model (standard) and/or --robust-model")
    data = open_dataset(args.data, root=args.root, download=args.download, progress=c.progress(args), limit=args.scan)
    method = c.method_from_args(args, data.images.shape[2] * data.images.shape[3])
    specs = [load_robust_model(s, STANDARD_GROUP, trust_code=True) for s in args.model]  # typed by the user
    specs += [load_robust_model(s, ROBUST_GROUP, trust_code=True) for s in args.robust_model]
    rows = run_robust_sis(
        specs,
        data,
        args.out,
        threshold=args.threshold,
        limit=args.limit,
        method=method,
        correct_only=args.correct_only,
        batch_size=args.batch_size,
        device=c.device(args),
        results=args.results,
        experiment=args.experiment,
        progress=c.progress(args),
    )
    print(f"{'model':<24} {'group':<12} {'n':>5} {'mean SIS':>10} {'± std':>8}")
    for r in rows:
        print(
            f"{r['model']:<24} {r['group']:<12} {r['with_sis']:>5} {100 * r['sis_fraction_mean']:>9.2f}% "
            f"{100 * r['sis_fraction_std']:>7.2f}%"
        )
    print(
        f"wrote {args.out / 'summary.json'} and {args.out / 'summary.csv'}"
        + (f"; appended to {args.results}" if args.results else "")
    )
    return 0


def _add_blackbox(sub: c.Subparsers) -> None:
    p = sub.add_parser("blackbox-sis", help="SIS of a forward-only model (TFLite) on photos, over pixel groups")
    p.add_argument("--tflite", type=Path, required=True, help="a .tflite image classifier")
    p.add_argument("--labels", type=Path, help="class names, one per line")
    p.add_argument("--image", type=Path, action="append", required=True, help="photo (repeatable)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--patch", type=c.positive_int, default=8, help="feature = patch×patch pixels (default 8)")
    group.add_argument("--superpixels", type=c.positive_int, help="feature = one of about N superpixels instead")
    c.add_method_options(p, names=("exact", "kstep"), default="kstep")
    tgroup = p.add_mutually_exclusive_group()
    tgroup.add_argument("--ratio", type=c.positive_float, default=0.9, help="τ = ratio · f(x) per image (default 0.9)")
    tgroup.add_argument("--threshold", type=c.fraction, help="a fixed τ instead")
    p.add_argument("--batch-size", type=c.positive_int, default=64, help="candidates per interpreter call (default 64)")
    p.add_argument("--out", type=c.output_dir, required=True, help="folder for trace.pt, panels.png, summary.json")
    p.add_argument("--threads", type=c.thread_count, default=1, help="interpreter threads (default 1)")
    c.add_progress(p)
    p.set_defaults(func=_cmd_blackbox)


def _cmd_blackbox(args: argparse.Namespace) -> int:
    from overinterp.data.imagenet import load_photo
    from overinterp.experiments.blackbox import run_blackbox_sis
    from overinterp.models.blackbox import tflite_classifier

    model = tflite_classifier(args.tflite, labels=args.labels, num_threads=args.threads)
    images = torch.stack([load_photo(p, model.input_size) for p in args.image])
    s = run_blackbox_sis(
        model,
        images,
        args.out,
        method=lambda n: c.method_from_args(args, n),
        image_names=[str(p) for p in args.image],
        patch=args.patch,
        superpixels=args.superpixels,
        ratio=args.ratio,
        threshold=args.threshold,
        batch_size=args.batch_size,
        model_source=str(args.tflite),
        progress=c.progress(args),
    )
    for r in s["images"]:
        print(
            f"{r['image']}: {r['class']} (f = {r['confidence']:.3f}), τ = {r['threshold']:.3f}: SIS of "
            f"{r['sis_features']} of {r['features']} features, f(SIS) = {r['sis_confidence']}"
        )
    print(
        f"{s['forward_passes']} forward passes in {s['seconds']:.1f} s; wrote {args.out}/trace.pt, "
        f"{s['panels'][0]}, summary.json"
    )
    return 0


def add_parsers(sub: c.Subparsers) -> None:
    """Register imagenet-sis, robust-sis and blackbox-sis."""
    _add_imagenet(sub)
    _add_robust(sub)
    _add_blackbox(sub)
