"""Core commands: ``backselect``, ``inspect``, ``models``, ``demo``.

    overinterp backselect --model resnet20 --checkpoint W.th --preprocessing imagenet \\
        --images test.npz --limit 8 --out trace.pt --threshold 0.99
    overinterp inspect trace.pt --threshold 0.9
    overinterp models
    overinterp demo --out runs/demo
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from overinterp.cli import _common as c

__all__ = ["add_parsers"]


def _print_sis(trace, threshold: float, model=None, images=None) -> None:
    res = trace.find_sis(threshold, model, images) if model is not None else trace.find_sis(threshold)
    p = trace.num_features.tolist()
    print(f"SIS at τ = {threshold} ({'re-verified with the model' if res.verified else 'from the trace'}):")
    for i, s in enumerate(res):
        conf = float(torch.sigmoid(trace.full_logodds[i].double()))
        size = "none (f(x) < τ)" if s is None else f"{s.numel()} of {p[i]} features ({100 * s.numel() / p[i]:.1f}%)"
        lab = "" if trace.labels is None else f" label {int(trace.labels[i])}"
        print(f"  image {i}: target {int(trace.target[i])}{lab}, p(full) = {conf:.6f}, SIS {size}")
    if res.verified and res.extended:
        print(f"  {res.extended} SIS extended along the trace after re-check")


def _cmd_backselect(args: argparse.Namespace) -> int:
    import overinterp
    from overinterp.data.specs import open_images

    c.apply_threads(args)
    device = torch.device(c.device(args))
    model = c.model_spec(args).load().to(device)
    from overinterp.training.pipeline import validate_inputs

    data = open_images(args.images, limit=args.limit)
    images = data.images.to(device)
    validate_inputs(model, images, data.labels, where=f"--images {args.images}")
    features = None if args.patch == 1 else overinterp.patch_features(images.shape[2], images.shape[3], args.patch)
    num_features = images.shape[2] * images.shape[3] if features is None else int(features.max()) + 1
    method = c.method_from_args(args, num_features)
    c.check_batch_size(args.batch_size, images.shape[1:])
    bs = args.batch_size or overinterp.DEFAULT_BATCH_SIZE
    print(
        f"backselect: {len(images)} images {tuple(images.shape[1:])} from {args.images}, model {args.model}, "
        f"method {method.describe()}, batch {bs}, device {device}",
        file=sys.stderr,
    )
    trace = overinterp.backselect(
        model, images, method=method, features=features, batch_size=bs, progress=c.progress(args), labels=data.labels
    )
    trace.meta["images"] = str(args.images)
    trace.meta["image_names"] = data.names
    trace.save(args.out)
    print(f"wrote {args.out} ({len(trace)} images, P = {trace.P})")
    if args.threshold is not None:
        _print_sis(trace, args.threshold, model, images)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from overinterp import BackselectTrace

    trace = BackselectTrace.load(args.trace)
    print(f"{args.trace}: {len(trace)} images, image shape {trace.image_shape}, P = {trace.P}")
    print(f"method: {trace.method}")
    print(f"meta: { {k: v for k, v in trace.meta.items() if k != 'image_names'} }")
    if args.threshold is not None:
        _print_sis(trace, args.threshold)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from overinterp.models import list_models

    print("\n".join(list_models()))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from overinterp.experiments.demo import run_demo

    c.apply_threads(args)
    from overinterp.report import demo_report

    run_demo(args.out, seed=args.seed, progress=c.progress(args), report=demo_report)
    return 0


def add_parsers(sub: c.Subparsers) -> None:
    """Register backselect, inspect, models and demo."""
    p = sub.add_parser("backselect", help="backward selection on images; writes a trace file")
    c.add_model_options(p)
    p.add_argument(
        "--images",
        required=True,
        help="a .npy/.npz/.pt file, an image file, a folder, or any dataset spec (docs/how-to/datasets.md)",
    )
    p.add_argument("--limit", type=c.positive_int, help="only the first N images")
    p.add_argument("--out", type=c.output_file, required=True, help="trace file to write (atomically)")
    c.add_method_options(p)
    p.add_argument(
        "--patch", type=c.positive_int, default=1, help="feature = patch×patch pixels (1: one feature per pixel)"
    )
    p.add_argument("--batch-size", type=c.positive_int, default=None, help="candidates per forward call")
    c.add_device(p, "cpu")
    c.add_threads(p)
    p.add_argument("--threshold", type=c.fraction, help="also report SIS sizes at this confidence threshold")
    c.add_progress(p)
    p.set_defaults(func=_cmd_backselect)

    p = sub.add_parser("inspect", help="summarise a trace file; SIS sizes at a threshold")
    p.add_argument("trace", type=Path, help="a trace file (overinterp backselect --out)")
    p.add_argument("--threshold", type=c.fraction, help="report SIS sizes at this confidence threshold")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser("models", help="list registered models")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("demo", help="the main job on its embedded default: a planted shortcut, found by SIS")
    p.add_argument("--out", type=c.output_dir, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    c.add_threads(p)
    c.add_progress(p)
    p.set_defaults(func=_cmd_demo)
