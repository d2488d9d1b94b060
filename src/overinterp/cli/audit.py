"""``overinterp audit MODEL DATA --out DIR [--budget 20m] [--images N] [--method …] [--force]`` (thin over
:func:`overinterp.report.audit.audit`, which is :func:`overinterp.audit`)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from overinterp.cli import _common as c

__all__ = ["add_parsers"]


def _duration(text: str) -> float:
    from overinterp.experiments.audit import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _audit_dir(text: str) -> Path:
    return c.output_dir(text)  # not a file, not empty, writable (or under a writable folder)


def _cmd_audit(args: argparse.Namespace) -> int:
    from overinterp.report.audit import audit

    c.apply_threads(args)
    args.model = args.model_spec
    spec = c.model_spec(args)
    method = None
    if args.method == "auto":
        given = [f for f, (dest, _) in c._METHOD_OPTIONS.items() if getattr(args, dest, None) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} need an explicit --method (auto chooses the method's defaults)")
    else:
        method = c.method_from_args(args)
    try:
        result = audit(
            spec,
            args.data,
            out=args.out,
            budget=args.budget,
            images=args.images,
            method=method,
            patch=args.patch,
            size=args.size,
            seed=args.seed,
            force=args.force,
            device=c.device(args),
            threads=args.threads,
            batch_size=args.batch_size,
            probe_seconds=args.probe_seconds,
            executor=c.executor(args),
            progress=c.progress(args),
            report=not args.no_report,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: the plan and every finished shard are kept in {args.out}; rerun the same command to "
            "resume",
            file=sys.stderr,
        )
        return 130
    _print(args, result.record)
    return 0


def _print(args: argparse.Namespace, record: dict) -> None:
    sec = record["seconds"]
    budget = record.get("budget_seconds")
    print(
        f"audit: {record['finished_images']} of {record['planned_images']} planned images in "
        f"{sec.get('total', 0):.0f} s"
        + (f" (budget {budget:.0f} s)" if budget else "")
        + "; "
        + ", ".join(f"{k} {v:.0f} s" for k, v in sec.items() if k != "total")
    )
    print(f"verdict: {record['verdict']} — {record['summary']}")
    screening = record.get("screening") or {}
    if screening.get("flagged"):
        print(f"screening: {screening['recommendation']}")
    if record.get("report"):
        print(f"report: {record['report']}")
    print(f"record: {json.dumps(str(Path(args.out) / 'audit.json'))}")


def add_parsers(sub: c.Subparsers) -> None:
    """Register ``audit``."""
    p = sub.add_parser(
        "audit",
        help="one command from a model and a dataset to the report: probe, plan, resumable job, evaluation, report",
        description="Probe the model's throughput, print a plan (method, images, estimated time; what --budget buys "
        "with each method), run the resumable dataset job, evaluate the model on its own 5% backward-selection and "
        "random subsets, record SIS sizes, and write the verdict-first report DIR/report/index.html. Refuses a "
        "model whose accuracy is not clearly above chance or whose predictions collapse (a mis-declared pipeline) "
        "unless --force. Rerun the same command to resume, or with a larger --budget to extend the sample.",
    )
    p.add_argument("model_spec", metavar="MODEL", help=c.MODEL_HELP)
    p.add_argument("data", metavar="DATA", help=c.DATASET_HELP)
    p.add_argument("--checkpoint", type=Path, help="weights file for a registry MODEL")
    p.add_argument("--preprocessing", help="normalisation for checkpoints that record none: imagenet, cifar10, none")
    p.add_argument("--num-classes", type=c.positive_int, help="number of classes of a registry MODEL")
    c.add_pretrained(p)
    p.add_argument("--out", type=_audit_dir, required=True, help="audit folder (created; rerun to resume)")
    p.add_argument(
        "--budget",
        type=_duration,
        help="wall-clock cap (90s, 20m, 1.5h): the most faithful method that fits is chosen and the job stops when "
        "the budget is spent (finished shards are kept; a rerun with a larger budget continues)",
    )
    p.add_argument("--images", type=c.positive_int, help="at most this many images of the sample")
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the sample (stratified by class; default 0): same seed, same images",
    )
    p.add_argument(
        "--force", action="store_true", help="audit even when the pipeline check fails (accuracy at chance, collapse)"
    )
    c.add_method_options(p, default="auto")
    p.set_defaults(method="auto")
    for action in p._actions:
        if action.dest == "method":
            action.choices = ["auto", *action.choices]
            action.help = "auto (default): chosen from --budget, else fast; " + str(action.help).replace(
                "backward-selection method (default auto): ", ""
            )
    p.add_argument(
        "--patch", type=c.positive_int, help="feature = patch×patch pixels (default: 1 up to 64×64, else the plan's)"
    )
    p.add_argument(
        "--size",
        type=c.image_side,
        help="resize and centre-crop folder images to SIZE×SIZE (default: the model file's input size)",
    )
    p.add_argument("--batch-size", type=c.positive_int, help="candidates per forward call (default 64)")
    p.add_argument(
        "--probe-seconds", type=c.positive_float, default=3.0, help="seconds of throughput probing (default 3)"
    )
    p.add_argument("--no-report", action="store_true", help="stop after the evaluation (no DIR/report/index.html)")
    c.add_device(p, "cpu")
    c.add_threads(p)
    c.add_executor_options(p, "shard task")
    c.add_progress(p)
    p.set_defaults(func=_cmd_audit)
