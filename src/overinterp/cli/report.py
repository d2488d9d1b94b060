"""``overinterp report RUN_DIR [--out DIR] [--mask-style grey|checkerboard]``."""

from __future__ import annotations

import argparse
from pathlib import Path

from overinterp.cli import _common as c

__all__ = ["add_parsers"]


def _cmd_report(args: argparse.Namespace) -> int:
    from overinterp.report import ReportOptions, build_report

    c.apply_threads(args)
    opt = ReportOptions(
        mask_style=args.mask_style,
        threshold=args.threshold,
        fraction=args.fraction,
        per_class=args.per_class,
        max_model_images=args.max_model_images,
        use_model=not args.no_model,
        trust_code=args.trust_code,
    )
    if args.thresholds:
        opt.thresholds = tuple(args.thresholds)
    report = build_report(args.run_dir, args.out, opt)
    print(f"report: {report.html_path}")
    print(f"summary: {report.markdown_path}")
    return 0


def add_parsers(sub: c.Subparsers) -> None:
    """Register ``report``."""
    p = sub.add_parser("report", help="the overinterpretation report of a run folder (HTML + Markdown + figures)")
    p.add_argument("run_dir", type=Path, help="run folder: job folders (manifest.json) and results.csv under it")
    p.add_argument("--out", type=c.output_dir, help="output folder (default RUN_DIR/report)")
    p.add_argument(
        "--mask-style", default="grey", choices=["grey", "checkerboard", "baseline"], help="how masked pixels are drawn"
    )
    p.add_argument("--threshold", type=c.fraction, default=0.99, help="τ of the SIS heatmaps and examples")
    p.add_argument("--thresholds", type=c.floats, help="τ sweep of the SIS-size figures, comma-separated")
    p.add_argument("--fraction", type=c.fraction, default=0.05, help="pixel-subset size of the location heatmaps")
    p.add_argument("--per-class", type=c.positive_int, default=1, help="SIS examples per class")
    p.add_argument(
        "--max-model-images",
        type=c.positive_int,
        default=1000,
        help="at most this many images per job get a forward pass (subset confidences)",
    )
    p.add_argument("--no-model", action="store_true", help="no forward passes: subset confidences from results only")
    c.add_trust_code(p)
    c.add_threads(p)
    p.set_defaults(func=_cmd_report)
