"""The command line: thin wrappers over the library.

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

from overinterp.cli import experiments as cli_experiments, imagenet as cli_imagenet, jobs as cli_jobs

__all__ = ["main", "build_parser"]


def add_method_options(p: argparse.ArgumentParser) -> None:
    """--method and its parameters (shared by backselect and backselect-dataset)."""
    p.add_argument("--method", default="exact", choices=["exact", "gradient", "kstep", "adaptive", "screened"],
                   help="exact (default); gradient: Batched Gradient (--k per block); kstep: exact scores, "
                   "--k removals per step; adaptive: large steps then an exact --tail; screened: exact "
                   "steps chosen by a bf16 screen + float32 re-scoring of the --rescore-top best")
    p.add_argument("--rank-by", default="logodds", choices=["logodds", "probability"], help="exact only")
    p.add_argument("--k", type=int, help="features per block/step for gradient (default 1) and kstep (default 16)")
    p.add_argument("--step-fraction", type=float, default=0.05, help="adaptive: head step = this × remaining")
    p.add_argument("--tail", type=float, default=0.15, help="adaptive: fraction removed by exact single steps")
    p.add_argument("--head", default="kstep", choices=["kstep", "gradient"], help="adaptive: how head blocks are chosen")
    p.add_argument("--rescore-top", type=int, default=16, help="screened: candidates re-scored in full precision")


def _add_backselect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backselect", help="exact backward selection on images; writes a trace file")
    p.add_argument("--model", required=True, help="registry name (see `overinterp models`) or an ensemble .json")
    p.add_argument("--checkpoint", type=Path, help="weights file (public CIFAR ResNet checkpoints or overinterp's own)")
    p.add_argument("--preprocessing", help="normalisation for checkpoints that record none: imagenet, cifar10, none")
    p.add_argument("--num-classes", type=int)
    p.add_argument("--images", type=Path, required=True, help=".npy/.npz/.pt file, an image file, or a folder")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--out", type=Path, required=True, help="trace file to write (atomically)")
    add_method_options(p)
    p.add_argument("--patch", type=int, default=1, help="feature = patch×patch pixels (1: one feature per pixel)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--threshold", type=float, help="also report SIS sizes at this confidence threshold")
    p.add_argument("--no-progress", action="store_true")


def _cmd_backselect(args: argparse.Namespace) -> int:
    import overinterp
    from overinterp.data import load_images
    from overinterp.models import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    # load_model: a registry name, or an ensemble .json (an Ensemble is a Classifier like any other)
    model = load_model(args.model, num_classes=args.num_classes, checkpoint=args.checkpoint, preprocessing=args.preprocessing)
    model = model.to(device)
    data = load_images(args.images, limit=args.limit)
    images = data.images.to(device)
    features = None if args.patch == 1 else overinterp.patch_features(images.shape[2], images.shape[3], args.patch)
    method = make_method(args)
    bs = args.batch_size or overinterp.DEFAULT_BATCH_SIZE
    print(f"backselect: {len(images)} images {tuple(images.shape[1:])} from {args.images}, model {args.model}, "
          f"method {method.describe()}, batch {bs}, device {device}", file=sys.stderr)
    trace = overinterp.backselect(
        model, images, method=method, features=features, batch_size=bs,
        progress=not args.no_progress, labels=data.labels,
    )
    trace.meta["images"] = str(args.images)
    trace.meta["image_names"] = data.names
    trace.save(args.out)
    print(f"wrote {args.out} ({len(trace)} images, P = {trace.P})")
    if args.threshold is not None:
        _print_sis(trace, args.threshold, model, images)
    return 0


def make_method(args: argparse.Namespace):
    import overinterp

    if args.method != "exact" and args.rank_by != "logodds":
        raise ValueError("--rank-by applies to --method exact only")
    if args.k is not None and args.method not in ("gradient", "kstep"):
        raise ValueError("--k applies to --method gradient or kstep only")
    if args.method == "gradient":
        return overinterp.BatchedGradient(args.k if args.k is not None else 1)
    if args.method == "kstep":
        return overinterp.KStep(args.k if args.k is not None else 16)
    if args.method == "adaptive":
        return overinterp.Adaptive(step_fraction=args.step_fraction, tail=args.tail, head=args.head)
    if args.method == "screened":
        return overinterp.Screened(rescore_top=args.rescore_top)
    return overinterp.Exact(rank_by=args.rank_by)


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

    if args.threads:
        torch.set_num_threads(args.threads)
    run_demo(args.out, seed=args.seed, progress=not args.no_progress)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="overinterp", description="Is an image classifier right for the right reasons?")
    ap.add_argument("--version", action="store_true", help="print the version and exit")
    sub = ap.add_subparsers(dest="command")
    _add_backselect(sub)
    p = sub.add_parser("inspect", help="summarise a trace file; SIS sizes at a threshold")
    p.add_argument("trace", type=Path)
    p.add_argument("--threshold", type=float)
    sub.add_parser("models", help="list registered models")
    p = sub.add_parser("demo", help="the main job on its embedded default: a planted shortcut, found by SIS")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--no-progress", action="store_true")
    cli_experiments.add_parsers(sub)  # train, evaluate, table, ensemble
    cli_jobs.add_parsers(sub)  # backselect-dataset, job-status, pixel-subset experiments
    cli_imagenet.add_parsers(sub)  # imagenet-sis, robust-sis, blackbox-sis
    from overinterp.cli import human as human_cli  # no web dependency until a human command runs

    human_cli.add_parsers(sub)  # human build, serve, export, score
    from overinterp.cli import report as cli_report

    cli_report.add_parsers(sub)  # report
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.version:
        import overinterp

        print(overinterp.__version__)
        return 0
    handlers = {"backselect": _cmd_backselect, "inspect": _cmd_inspect, "models": _cmd_models, "demo": _cmd_demo}
    handlers.update(cli_experiments.HANDLERS)
    if args.command is None:
        ap.print_help()
        return 2
    try:
        # sub-command modules may register their handler with set_defaults(func=…)
        return (getattr(args, "func", None) or handlers[args.command])(args)
    except KeyboardInterrupt:
        print("\ninterrupted: no partial output was written", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, FloatingPointError) as exc:
        print(f"overinterp {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
