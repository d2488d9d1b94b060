"""``check-method``: is a backward-selection method faithful to exact on *your* model?

    overinterp check-method resnet20@W.th?preprocessing=imagenet cifar10:test --images 8 --method fast
    overinterp check-method model.pt test.npz --images 8 --method fast --plan-only

Runs exact backward selection beside the method on the first images, after printing what it
will cost, and prints the paired differences with 95% intervals (accuracy and mean
probability on each trace's own 5% subsets, SIS size at τ = 0.99 and 0.9).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from overinterp.cli import _common as c

__all__ = ["add_parsers"]


def _cmd_check_method(args: argparse.Namespace) -> int:
    import overinterp
    from overinterp._atomic import atomic_write_text
    from overinterp.data.specs import open_images
    from overinterp.experiments.check_method import check_method, plan_check
    from overinterp.models.predict import check_finite_images, check_labels, probe_model

    c.apply_threads(args)
    device = torch.device(c.device(args))
    data = open_images(args.data, limit=args.images)
    images = data.images.to(device)
    check_finite_images(images, str(args.data))
    features = None if args.patch == 1 else overinterp.patch_features(images.shape[2], images.shape[3], args.patch)
    num_features = images.shape[2] * images.shape[3] if features is None else int(features.max()) + 1
    method = c.method_from_args(args, num_features)  # bad settings: refused before the model is loaded
    model = c.model_spec(args).load().to(device)
    num_classes = probe_model(model, tuple(images.shape[1:]), where=str(args.data))
    given = data.labels
    if given is not None and bool((given < 0).all()):
        given = None  # -1 throughout: unlabelled (an audit's own images file of unlabelled images)
    check_labels(given, num_classes, str(args.data))
    overinterp.sis.methods.check_model_supports(method, model)
    bs = args.batch_size or overinterp.DEFAULT_BATCH_SIZE
    plan = plan_check(model, images, method, features=features, batch_size=bs)
    if args.plan_only:
        print(f"check-method: {plan.describe()}")
        return 0
    labels = None if given is None else given.to(device)
    result = check_method(
        model,
        images,
        method,
        labels=labels,
        features=features,
        batch_size=bs,
        progress=c.progress(args),
        plan=plan,
        log=lambda msg: print(f"check-method: {msg}", file=sys.stderr, flush=True),
    )
    print(result.format())
    if args.out is not None:
        atomic_write_text(
            args.out, json.dumps({"model": args.model, "data": str(args.data), **result.as_dict()}, indent=1)
        )
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def add_parsers(sub: c.Subparsers) -> None:
    """Register check-method."""
    p = sub.add_parser(
        "check-method",
        help="run exact beside a method on a few images of your model and data; print the paired differences",
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("model", help=c.MODEL_HELP)
    p.add_argument(
        "data", help="images: a .npy/.npz/.pt file, an image folder, or any dataset spec (labels used when present)"
    )
    p.add_argument(
        "--images", type=c.positive_int, default=8, help="the first N images (default 8; exact costs P(P+1)/2 each)"
    )
    p.add_argument(
        "--checkpoint", help="weights file for a registry model (public CIFAR ResNet checkpoints or overinterp's own)"
    )
    p.add_argument("--preprocessing", help="normalisation for checkpoints that record none: imagenet, cifar10, none")
    p.add_argument("--num-classes", type=c.positive_int, help="number of classes of a registry model")
    c.add_method_options(p, default="fast")
    p.add_argument(
        "--patch", type=c.positive_int, default=1, help="feature = patch×patch pixels (1: one feature per pixel)"
    )
    p.add_argument("--batch-size", type=c.positive_int, default=None, help="candidates per forward call")
    p.add_argument("--plan-only", action="store_true", help="print the cost estimate and stop")
    p.add_argument("--out", type=c.output_file, help="also write the result as JSON")
    c.add_device(p, "cpu")
    c.add_threads(p)
    c.add_progress(p)
    p.set_defaults(func=_cmd_check_method)
