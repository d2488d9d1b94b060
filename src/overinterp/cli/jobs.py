"""Command line for dataset jobs and pixel-subset experiments (thin over
:mod:`overinterp.jobs` and :mod:`overinterp.experiments`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from overinterp.cli import _common as c

__all__ = ["add_parsers"]


def _add_backselect_dataset(sub: c.Subparsers) -> None:
    p = sub.add_parser(
        "backselect-dataset", help="backward selection over a dataset: sharded, resumable, local or on Ray"
    )
    c.add_model_options(p)
    p.add_argument("--dataset", required=True, help=c.DATASET_HELP)
    p.add_argument("--offset", type=c.nonnegative_int, default=0, help="first dataset position")
    p.add_argument("--limit", type=c.positive_int, help="at most this many images from --offset")
    p.add_argument("--sample", type=c.positive_int, help="a seeded random sample of this many images of the range")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the --sample draw (default 0)")
    c.add_method_options(p, default="fast")
    p.add_argument(
        "--patch", type=c.positive_int, default=1, help="feature = patch×patch pixels (1: one feature per pixel)"
    )
    p.add_argument(
        "--dtype", default="float32", choices=["float32", "float64"], help="precision of the model's forward passes"
    )
    p.add_argument("--shard-size", type=c.positive_int, default=100, help="images per shard file")
    p.add_argument("--batch-size", type=c.positive_int, help="candidates per forward call")
    c.add_device(p, "cpu")
    c.add_threads(p, "torch threads per worker (recorded in the manifest)")
    p.add_argument("--out", type=c.output_dir, required=True, help="job folder (manifest.json + shards/)")
    c.add_executor_options(p, "shard task")
    c.add_progress(p)
    p.set_defaults(func=_cmd_backselect_dataset)


def _cmd_backselect_dataset(args: argparse.Namespace) -> int:
    from overinterp.data.specs import open_dataset, portable_spec
    from overinterp.jobs import JobSpec, run_job, select_positions
    from overinterp.sis.features import patch_features

    c.apply_threads(args)
    if args.device and args.executor == "local":  # Ray workers may have devices this driver lacks
        c.check_device(args.device)
    dataset = portable_spec(args.dataset)  # absolute paths: workers may run elsewhere
    data = open_dataset(dataset)
    n, (h, w) = len(data), data.images.shape[2:]
    num_features = None if args.patch < 1 else int(patch_features(h, w, args.patch).max()) + 1  # JobSpec refuses < 1
    positions = select_positions(n, offset=args.offset, limit=args.limit, sample=args.sample, seed=args.sample_seed)
    model_spec = c.model_spec(args)
    # labels beyond the model's classes, or images the network cannot take: refused here, not in a worker
    from overinterp.training.pipeline import validate_inputs

    validate_inputs(model_spec.load(), data, positions=positions, where=f"--dataset {args.dataset}")
    c.check_batch_size(args.batch_size, data.images.shape[1:])
    spec = JobSpec(
        model=model_spec,
        dataset=dataset,
        positions=tuple(positions),
        method=c.method_from_args(args, num_features).describe(),
        patch=args.patch,
        dtype=args.dtype,
        shard_size=args.shard_size,
        device=args.device,
        threads=args.threads,
        batch_size=args.batch_size,
    )
    summary = run_job(spec, args.out, c.executor(args), progress=c.progress(args))
    print(json.dumps(summary))
    return 0


def _cmd_job_status(args: argparse.Namespace) -> int:
    from overinterp.jobs import job_status

    st = job_status(args.job)
    print(
        f"{args.job}: {st['complete']}/{st['shards']} shards complete"
        + (f"; missing {st['missing'][:10]}{' …' if len(st['missing']) > 10 else ''}" if st["missing"] else "")
    )
    return 0 if not st["missing"] else 1


def _add_subsets(sub: c.Subparsers) -> None:
    p = sub.add_parser("subsets", help="pixel-subset experiments on finished backselect-dataset jobs")
    ss = p.add_subparsers(dest="subsets_command", required=True)

    e = ss.add_parser(
        "evaluate",
        help="a model on a job's full images and 5%% BS / random / mask subsets "
        "(+ confidence drop for the job's own model)",
    )
    e.add_argument("--job", type=Path, required=True, help="a finished backselect-dataset job folder")
    c.add_model_options(e, required=False)
    e.add_argument("--kinds", default="full,bs,random", help="comma list of full, bs, random, mask")
    e.add_argument("--fraction", type=c.fraction, default=0.05, help="pixel-subset size (default 0.05)")
    e.add_argument("--seed", type=int, help="random-subset seed (default 5678: the authors' seed of test subsets)")
    e.add_argument("--name", help="model name in the results file")
    e.add_argument("--train-on", default="full", help="what the model was trained on (results label: full, random5, …)")
    e.add_argument("--dataset-key", help="dataset name in the results file (e.g. cifar10:test)")
    e.add_argument("--results", type=c.output_file, help="append rows to this results file")
    e.add_argument("--experiment", default="pixel-subsets", help="experiment column of the results rows")
    c.add_trust_code(e)
    c.add_threads(e)
    e.set_defaults(func=_cmd_subsets_evaluate)

    t = ss.add_parser("train", help="retrain an architecture on a job's pixel subsets (Table 1 / S1)")
    t.add_argument("--train-job", type=Path, required=True, help="job whose subsets train the models")
    t.add_argument(
        "--test-job",
        action="append",
        required=True,
        metavar="DIR[=KEY]",
        help="job(s) whose subsets of the same kind test the models; KEY names the dataset in the "
        "results (e.g. DIR=cifar10:test); repeat for CIFAR-10.1 and the CIFAR-10-C sample",
    )
    t.add_argument(
        "--kind",
        default="bs",
        choices=["bs", "random", "mask"],
        help="backward-selection, random or mask subsets (default bs)",
    )
    t.add_argument("--fraction", type=c.fraction, default=0.05, help="pixel-subset size (default 0.05)")
    t.add_argument("--arch", default="resnet20", help="architecture to train (default resnet20)")
    t.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated replicate seeds (default 0,1,2,3,4)")
    t.add_argument("--recipe", default="paper", choices=["paper", "fast"], help="training recipe (default paper)")
    t.add_argument("--epochs", type=c.positive_int, help="override the recipe's epochs")
    t.add_argument(
        "--augment",
        nargs="?",
        const="joint",
        default="none",
        choices=["none", "joint", "once"],
        help="Table S1: joint (the flag alone) crops+flips image and keep-mask together every epoch; once: the "
        "authors' pipeline, each image cropped+flipped once and the unaugmented image's mask applied unmoved",
    )
    t.add_argument("--train-subset-seed", type=int, help="random training-subset seed (default 1234, the authors')")
    t.add_argument("--test-subset-seed", type=int, help="random test-subset seed (default 5678, the authors')")
    t.add_argument("--out", type=c.output_dir, required=True, help="folder for the trained models")
    t.add_argument("--results", type=c.output_file, help="append rows to this results file")
    t.add_argument("--experiment", help="experiment column of the results rows")
    c.add_device(t)
    c.add_threads(t)
    c.add_progress(t)
    t.set_defaults(func=_cmd_subsets_train)

    r = ss.add_parser("transfer", help="every ordered pair of jobs: B on A's subsets, A's SIS under B")
    r.add_argument("--jobs", type=Path, nargs="+", required=True, help="finished backselect-dataset job folders")
    r.add_argument("--names", nargs="+", help="model labels, one per job (default: model or folder names)")
    r.add_argument("--threshold", type=c.fraction, default=0.99, help="SIS threshold τ (default 0.99)")
    r.add_argument("--fraction", type=c.fraction, default=0.05, help="pixel-subset size (default 0.05)")
    r.add_argument("--dataset-key", help="dataset name in the results file")
    r.add_argument("--results", type=c.output_file, help="append rows to this results file")
    c.add_trust_code(r)
    c.add_threads(r)
    r.set_defaults(func=_cmd_subsets_transfer)

    cmp = ss.add_parser("compare", help="overlap and location maps of two jobs' kept sets (ranking-artefact control)")
    cmp.add_argument("job_a", type=Path, help="first job folder")
    cmp.add_argument("job_b", type=Path, help="second job folder")
    cmp.add_argument("--fraction", type=c.fraction, default=0.05, help="pixel-subset size (default 0.05)")
    cmp.add_argument("--out", type=c.output_dir, required=True, help="folder for the overlap maps")
    cmp.set_defaults(func=_cmd_subsets_compare)


def _cmd_subsets_evaluate(args: argparse.Namespace) -> int:
    from overinterp.experiments import evaluate_subsets
    from overinterp.jobs import load_job

    c.apply_threads(args)
    model = c.model_spec(args).load() if args.model else None
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    out = evaluate_subsets(
        load_job(args.job, trust_code=args.trust_code),
        model,
        kinds=kinds,
        fraction=args.fraction,
        seed=args.seed,
        model_name=args.name,
        train_on=args.train_on,
        dataset_key=args.dataset_key,
        results=args.results,
        experiment=args.experiment,
        checkpoint=(args.checkpoint or args.model) if args.model else None,
    )
    for label, r in out.items():
        drop = r.get("confidence_drop")
        extra = f", confidence drop {drop['mean']:.3f} ± {drop['std']:.3f}" if drop else ""
        print(
            f"{label:>10}: accuracy {100 * r['accuracy']:.2f}% ({r['correct']}/{r['n']}), "
            f"mean confidence {r['mean_confidence']:.3f}{extra}"
        )
    if args.results:
        print(f"appended to {args.results}")
    return 0


def _cmd_subsets_train(args: argparse.Namespace) -> int:
    from overinterp.experiments import retrain_on_subsets

    c.apply_threads(args)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    overrides = {"epochs": args.epochs} if args.epochs else None
    if args.device:
        c.check_device(args.device)
    tests = [t.partition("=") for t in args.test_job]
    out = retrain_on_subsets(
        args.train_job,
        [Path(d) for d, _, _ in tests],
        kind=args.kind,
        fraction=args.fraction,
        arch=args.arch,
        seeds=seeds,
        recipe=args.recipe,
        augment=args.augment,
        train_subset_seed=args.train_subset_seed,
        test_subset_seed=args.test_subset_seed,
        overrides=overrides,
        out_dir=args.out,
        dataset_keys=[k or None for _, _, k in tests],
        results=args.results,
        experiment=args.experiment,
        device=args.device,
        progress=c.progress(args),
    )
    accs = torch.tensor([r["accuracy"] for r in out], dtype=torch.float64)
    std = float(accs.std()) if len(accs) > 1 else 0.0
    for r in out:
        print(f"seed {r['seed']}: {r['train_on']} → {r['evaluate_on']} accuracy {100 * r['accuracy']:.2f}%")
    print(f"mean ± std over {len(out)} seeds: {100 * float(accs.mean()):.2f} ± {100 * std:.2f}%")
    return 0


def _cmd_subsets_transfer(args: argparse.Namespace) -> int:
    from overinterp.experiments import transfer
    from overinterp.jobs import load_job

    c.apply_threads(args)
    for r in transfer(
        [load_job(j, trust_code=args.trust_code) for j in args.jobs],
        threshold=args.threshold,
        fraction=args.fraction,
        results=args.results,
        dataset_key=args.dataset_key,
        names=args.names,
    ):
        print(
            f"{r['from']} → {r['to']}: accuracy on subsets {100 * r['subset_accuracy']:.2f}%, "
            f"SIS still ≥ τ: {100 * r['sis_transfer']:.1f}% of {r['n_sis']}"
        )
    return 0


def _cmd_subsets_compare(args: argparse.Namespace) -> int:
    from overinterp.experiments import compare_rankings

    r = compare_rankings(args.job_a, args.job_b, fraction=args.fraction, out_dir=args.out)
    print(json.dumps(r, indent=1))
    return 0


def add_parsers(sub: c.Subparsers) -> None:
    """Register backselect-dataset, job-status and subsets."""
    _add_backselect_dataset(sub)
    p = sub.add_parser("job-status", help="which shards of a backselect-dataset job are complete")
    p.add_argument("job", type=Path, help="job folder")
    p.set_defaults(func=_cmd_job_status)
    _add_subsets(sub)
