"""Command-line subcommands for the paper's experiments: ``train``, ``evaluate``,
``table`` and ``ensemble`` (registered by :mod:`overinterp.cli`).

    overinterp train --arch resnet20 --data cifar10:train --test-data cifar10:test --download \\
        --out runs/resnet20-s0 --seed 0                       # the paper's recipe
    overinterp train --arch resnet20 --recipe fast --data folder:train@cifar10-jpeg.zip \\
        --test-data folder:test@cifar10-jpeg.zip --out runs/fast
    overinterp train --arch resnet20,vgg16_bn --replicates 5 --executor ray --data cifar10:train@/shared/data \\
        --out runs/replicates                                 # runs/resnet20-seed0 … vgg16_bn-seed4, in parallel
    overinterp ensemble --out runs/resnet20x5.json runs/resnet20-s*/model.pt
    overinterp evaluate --model runs/resnet20-s0/model.pt --dataset cifar10:test --dataset cifar10.1 \\
        --dataset cifar10c --results results.csv
    overinterp evaluate --model runs/resnet20x5.json --results results.csv
    overinterp table results.csv --out table1.md

Dataset and model arguments take the specs of docs/how-to/datasets.md and docs/how-to/model-formats.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Iterator

import torch

from overinterp.cli import _common as c

__all__ = ["add_parsers"]

DEFAULT_EVAL_DATASETS = ("cifar10:test", "cifar10.1", "cifar10c")
_ROOT_HELP = "dataset folder for specs without @ROOT (default $OVERINTERP_DATA or ~/.cache/overinterp/data)"


def _add_train(sub: c.Subparsers) -> None:
    p = sub.add_parser("train", help="train a classifier (the paper's recipe by default); resumable")
    p.add_argument("--arch", required=True, help="registry name: resnet20, resnet18, vgg16_bn, … (`overinterp models`)")
    p.add_argument(
        "--recipe",
        default="paper",
        choices=["paper", "fast"],
        help="paper: SGD+Nesterov, lr 0.1 ÷5 at 60/120/160, 200 epochs; fast: 4 epochs, one-cycle",
    )
    p.add_argument(
        "--data", required=True, help="training set, e.g. cifar10:train, folder:train@x.zip; " + c.DATASET_HELP
    )
    p.add_argument("--test-data", help="evaluated after each epoch, e.g. cifar10:test (same forms as --data)")
    p.add_argument("--root", type=Path, help=_ROOT_HELP)
    p.add_argument("--download", action="store_true", help="fetch missing official dataset files")
    p.add_argument(
        "--subset", type=c.positive_int, help="train on a random subset of this many images (seeded by --subset-seed)"
    )
    p.add_argument("--subset-seed", type=int, default=0, help="seed of the --subset draw (default 0)")
    p.add_argument(
        "--limit",
        type=c.positive_int,
        help="train on the first N images only (e.g. the images a backward-selection job covered; before --subset)",
    )
    p.add_argument("--test-limit", type=c.positive_int, help="evaluate on the first N test images only")
    p.add_argument("--out", type=c.output_dir, required=True, help="run folder: checkpoint.pt, model.pt, metrics.jsonl")
    p.add_argument("--seed", type=int, help="replicate seed (weights, shuffling, augmentation); default 0")
    for name, kind in (
        ("epochs", c.positive_int),
        ("batch-size", c.positive_int),
        ("lr", c.positive_float),
        ("momentum", c.nonnegative_float),
        ("weight-decay", c.nonnegative_float),
        ("gamma", c.positive_float),
        ("warmup-epochs", c.nonnegative_float),
        ("label-smoothing", c.nonnegative_float),
        ("crop-padding", c.nonnegative_int),
    ):
        p.add_argument(f"--{name}", type=kind, help="override the recipe's value")
    p.add_argument(
        "--schedule",
        choices=["multistep", "onecycle", "cosine", "constant"],
        help="learning-rate schedule (default: the recipe's)",
    )
    p.add_argument("--milestones", type=c.ints, help="comma-separated epochs for multistep, e.g. 60,120,160")
    p.add_argument("--no-nesterov", action="store_true", help="plain momentum instead of Nesterov")
    p.add_argument(
        "--no-decay-norm-and-bias", action="store_true", help="exempt biases and norm layers from weight decay"
    )
    p.add_argument("--no-augment", action="store_true", help="no random crop or flip")
    p.add_argument("--no-flip", action="store_true", help="random crop but no horizontal flip")
    p.add_argument(
        "--input-dropout",
        type=_dropout_rate,
        metavar="RATE",
        help="input dropout (a mitigation): replace each training pixel by the model's baseline with "
        "probability RATE in [0, 1), drawn per image and step from --seed (default 0: off)",
    )
    p.add_argument(
        "--init",
        metavar="CKPT",
        help="fine-tune: start from this checkpoint's weights (an overinterp checkpoint, or a public one such as "
        "resnet20-cifar10.th with --preprocessing) instead of random weights",
    )
    p.add_argument("--preprocessing", help="cifar10 (default), imagenet, none, or auto (the training set's mean/std)")
    p.add_argument("--force", action="store_true", help="resume even if settings or data differ from the checkpoint's")
    p.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run folder")
    c.add_device(p)
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on CUDA")
    p.add_argument("--no-channels-last", action="store_true", help="keep the NCHW memory layout on CUDA")
    p.add_argument("--eval-every", type=c.positive_int, default=1, help="test every N epochs (default 1)")
    c.add_threads(p)
    p.add_argument("--results", type=c.output_file, help="append the final test accuracy to this results file")
    p.add_argument("--name", help="model name in the results file (default: the architecture)")
    p.add_argument("--experiment", default="", help="experiment column of the results rows")
    c.add_progress(p)
    g = p.add_argument_group("replicates and executors")
    g.add_argument(
        "--replicates",
        type=c.positive_int,
        metavar="N",
        help="train seeds SEED..SEED+N-1 (of each --arch, comma-separated) into OUT/<arch>-seed<k>",
    )
    c.add_executor_options(g, "training run")  # a retried run resumes its checkpoint
    p.set_defaults(func=_cmd_train)


def _dropout_rate(text: str) -> float:
    """A number in [0, 1) (an argparse ``type``: the input-dropout rate)."""
    value = c.fraction(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1) (1 would drop every pixel), got {value:g}")
    return value


def _load(spec: str, root: Path | None, download: bool, progress: bool, limit: int | None = None):
    from overinterp.data.specs import open_dataset

    return open_dataset(spec, root=root, download=download, progress=progress, limit=limit)


def _train_config(args: argparse.Namespace, arch: str | None = None, seed: int | None = None):
    from overinterp.training.trainer import make_config

    return make_config(
        args.recipe,
        arch=arch or args.arch,
        seed=args.seed if seed is None else seed,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        gamma=args.gamma,
        warmup_epochs=args.warmup_epochs,
        label_smoothing=args.label_smoothing,
        crop_padding=args.crop_padding,
        schedule=args.schedule,
        milestones=args.milestones,
        preprocessing=args.preprocessing,
        nesterov=False if args.no_nesterov else None,
        augment=False if args.no_augment else None,
        flip=False if args.no_flip else None,
        input_dropout=args.input_dropout,
        init_checkpoint=str(Path(args.init).resolve()) if args.init else None,
        decay_norm_and_bias=False if args.no_decay_norm_and_bias else None,
    )


def _cmd_train(args: argparse.Namespace) -> int:
    from overinterp.results import append_results
    from overinterp.training.evaluation import result_rows
    from overinterp.training.replicates import select_training_images
    from overinterp.training.trainer import train_classifier

    c.apply_threads(args)
    if args.replicates is not None or args.executor != "local" or "," in args.arch:
        return _cmd_train_replicates(args)
    config = _train_config(args)
    if args.device:
        c.check_device(args.device)
    progress = not args.no_progress
    t0 = time.perf_counter()
    train = select_training_images(
        _load(args.data, args.root, args.download, progress), args.limit, args.subset, args.subset_seed
    )
    test = _load(args.test_data, args.root, args.download, progress, args.test_limit) if args.test_data else None
    print(
        f"train: {config.arch}, recipe {config.recipe}, seed {config.seed}, {config.epochs} epochs on "
        f"{len(train)} images from {args.data}"
        + (f", testing on {len(test)} from {args.test_data}" if test else "")
        + f" (data loaded in {time.perf_counter() - t0:.1f} s)",
        file=sys.stderr,
    )
    result = train_classifier(
        config,
        train,
        test,
        args.out,
        resume=not args.no_resume,
        force=args.force,
        device=args.device,
        amp=False if args.no_amp else None,
        channels_last=False if args.no_channels_last else None,
        eval_every=args.eval_every,
        progress=progress,
    )
    last = result.history[-1] if result.history else {}
    wall = sum(h.get("seconds", 0.0) for h in result.history if "epoch" in h)
    line = f"trained {config.arch} for {config.epochs} epochs ({wall:.0f} s of epochs"
    line += f", resumed after epoch {result.resumed_from})" if result.resumed_from else ")"
    if "test_accuracy" in last:
        line += f"; test accuracy {100 * last['test_accuracy']:.2f}% on {last['test_n']} images"
    print(line)
    print(f"model: {result.checkpoint}")
    if args.results and test is not None:
        ev = {
            "dataset": test.meta.get("key", test.name),
            "accuracy": last["test_accuracy"],
            "loss": last["test_loss"],
            "n": last["test_n"],
        }
        append_results(
            args.results,
            result_rows(
                [ev],
                result.model,
                model_name=args.name or config.arch,
                seed=config.seed,
                experiment=args.experiment,
                checkpoint=result.checkpoint,
            ),
        )
        print(f"appended to {args.results}")
    return 0


def _cmd_train_replicates(args: argparse.Namespace) -> int:
    """``train`` with --replicates, several architectures or --executor ray: one task per run."""
    from overinterp.data.specs import open_dataset, portable_spec
    from overinterp.models import load_model
    from overinterp.results import append_results
    from overinterp.training.evaluation import result_rows
    from overinterp.training.replicates import TrainTask, replicate_tasks, train_replicates

    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    if args.replicates is not None and args.replicates < 1:
        raise ValueError(f"--replicates must be >= 1, got {args.replicates}")
    train = portable_spec(args.data, args.root)
    test = portable_spec(args.test_data, args.root) if args.test_data else None
    if args.download:  # fetch once here, not in every task
        for spec in filter(None, (train, test)):
            open_dataset(spec, download=True, progress=not args.no_progress)
    runtime = dict(
        train=train,
        test=test,
        limit=args.limit,
        subset=args.subset,
        subset_seed=args.subset_seed,
        test_limit=args.test_limit,
        device=args.device,
        threads=args.threads,
        amp=False if args.no_amp else None,
        channels_last=False if args.no_channels_last else None,
        eval_every=args.eval_every,
        resume=not args.no_resume,
        force=args.force,
    )
    first = _train_config(args).seed
    if args.replicates is None and len(archs) == 1:  # one run, into --out itself
        tasks = [TrainTask(config=_train_config(args, archs[0]).to_dict(), out_dir=str(args.out.resolve()), **runtime)]
    else:
        tasks = replicate_tasks(
            _train_config(args, archs[0]),
            archs,
            range(first, first + (args.replicates or 1)),
            out_dir=args.out,
            **runtime,
        )
    summaries = train_replicates(tasks, c.executor(args), progress=not args.no_progress)
    for s in summaries:
        print(
            f"model: {s['checkpoint']}"
            + (
                f" (test accuracy {100 * s['test_accuracy']:.2f}% on {s['test_n']} images)"
                if s.get("test_accuracy") is not None
                else ""
            )
        )
    if args.results and test is not None:
        for s in summaries:
            ev = {"dataset": args.test_data, "accuracy": s["test_accuracy"], "loss": s["test_loss"], "n": s["test_n"]}
            model = load_model(None, checkpoint=s["checkpoint"])
            name = args.name or s["arch"]
            append_results(
                args.results,
                result_rows(
                    [ev],
                    model,
                    model_name=name,
                    seed=s["seed"],
                    experiment=args.experiment,
                    checkpoint=Path(s["checkpoint"]),
                ),
            )
        print(f"appended {len(summaries)} rows to {args.results}")
    return 0


def _add_evaluate(sub: c.Subparsers) -> None:
    p = sub.add_parser("evaluate", help="accuracy on datasets; appends rows to a results file")
    c.add_model_options(p)
    p.add_argument(
        "--dataset", action="append", help="repeatable (default: cifar10:test, cifar10.1, cifar10c); " + c.DATASET_HELP
    )
    p.add_argument("--root", type=Path, help=_ROOT_HELP)
    p.add_argument("--download", action="store_true", help="fetch missing official dataset files")
    p.add_argument("--limit", type=c.positive_int, help="first N images of each dataset only (folders: in class order)")
    p.add_argument("--results", type=c.output_file, help="results CSV to append to")
    p.add_argument("--name", help="model name in the results (default: architecture or ensemble name)")
    p.add_argument("--seed", type=int, help="replicate seed (default: the one the checkpoint records)")
    p.add_argument("--train-on", default="full", help="train_on column of the results rows (default full)")
    p.add_argument("--evaluate-on", default="full", help="evaluate_on column of the results rows (default full)")
    p.add_argument("--experiment", default="", help="experiment column of the results rows")
    p.add_argument("--notes", default="", help="notes column of the results rows")
    p.add_argument("--batch-size", type=c.positive_int, default=500, help="images per forward call (default 500)")
    c.add_device(p)
    c.add_threads(p)
    c.add_progress(p)
    p.set_defaults(func=_cmd_evaluate)


def _recorded_seed(checkpoint: str | None) -> int | None:
    """The replicate seed an overinterp checkpoint records, if any."""
    from overinterp.models import load_checkpoint_file
    from overinterp.models.checkpoint import is_own_checkpoint

    if checkpoint is None:
        return None
    ckpt = load_checkpoint_file(checkpoint)
    return (ckpt.get("extra") or {}).get("config", {}).get("seed") if is_own_checkpoint(ckpt) else None


def _eval_sets(specs: list[str], args: argparse.Namespace) -> Iterator:
    """Each --dataset, opened one at a time; all of CIFAR-10-C stays a spec (evaluated per corruption)."""
    from overinterp.data.specs import parse_dataset

    for text in specs:
        spec = parse_dataset(text).with_root(args.root)
        if spec.key == "cifar10c:all" and args.limit is None:
            yield str(spec)
        else:
            yield spec.open(download=args.download, progress=c.progress(args), limit=args.limit)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from overinterp.results import append_results
    from overinterp.training.evaluation import evaluate_datasets, result_rows

    c.apply_threads(args)
    device = torch.device(c.device(args))
    spec = c.model_spec(args)
    model = spec.load().to(device).eval()
    seed = args.seed if args.seed is not None else _recorded_seed(spec.checkpoint)
    # recorded as given on the command line
    given = args.checkpoint or (Path(args.model) if spec.kind in ("ensemble", "checkpoint") else None)
    checkpoint = given or (Path(spec.checkpoint) if spec.checkpoint else None)
    datasets = args.dataset or list(DEFAULT_EVAL_DATASETS)
    print(
        f"evaluate: {getattr(model, 'name', type(model).__name__)} on {', '.join(datasets)} ({device})", file=sys.stderr
    )
    evaluations = evaluate_datasets(
        model,
        _eval_sets(datasets, args),
        root=args.root,  # type: ignore[arg-type]
        download=args.download,
        limit=args.limit,
        batch_size=args.batch_size,
        progress=c.progress(args),
        log=print,
    )
    if args.results:
        rows = result_rows(
            evaluations,
            model,
            model_name=args.name,
            seed=seed,
            train_on=args.train_on,
            evaluate_on=args.evaluate_on,
            experiment=args.experiment,
            checkpoint=checkpoint,
            notes=args.notes,
        )
        append_results(args.results, rows)
        print(f"appended {len(rows)} rows to {args.results}")
    return 0


def _add_table(sub: c.Subparsers) -> None:
    p = sub.add_parser("table", help="render a results file as the paper's Table 1 (Markdown or CSV)")
    p.add_argument("results", type=Path, help="results CSV")
    p.add_argument("--format", default="markdown", choices=["markdown", "csv"], help="output format (default markdown)")
    p.add_argument("--metric", default="accuracy", help="metric shown in the cells (default accuracy)")
    p.add_argument(
        "--dataset", action="append", help="dataset columns (default: CIFAR-10 test, CIFAR-10.1, CIFAR-10-C, others)"
    )
    p.add_argument("--experiment", action="append", help="only rows of this experiment (repeatable), e.g. table1")
    p.add_argument("--out", type=c.output_file, help="write here (atomically) instead of printing")
    p.set_defaults(func=_cmd_table)


def _cmd_table(args: argparse.Namespace) -> int:
    from overinterp._atomic import atomic_write_text
    from overinterp.results import read_results, render_table

    text = render_table(
        read_results(args.results), args.format, metric=args.metric, datasets=args.dataset, experiments=args.experiment
    )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def _add_ensemble(sub: c.Subparsers) -> None:
    p = sub.add_parser("ensemble", help="write an ensemble file (mean of logits) from member checkpoints")
    p.add_argument("checkpoints", nargs="+", type=Path, help="overinterp checkpoints of the members")
    p.add_argument("--out", type=c.output_file, required=True, help="ensemble .json to write")
    p.add_argument("--name", help="ensemble name (default: the file's stem)")
    p.add_argument("--baseline", type=c.floats, help="pixel-space masking value (one or C numbers) for mixed members")
    p.set_defaults(func=_cmd_ensemble)


def _cmd_ensemble(args: argparse.Namespace) -> int:
    from overinterp.models import load_ensemble, save_ensemble
    from overinterp.results import model_fingerprint

    if args.out.suffix.lower() != ".json":
        raise ValueError(f"ensemble files end in .json, got {args.out}")
    baseline = None
    if args.baseline is not None:
        baseline = args.baseline[0] if len(args.baseline) == 1 else args.baseline
    path = save_ensemble(args.out, args.checkpoints, name=args.name, baseline=baseline)
    try:
        ens = load_ensemble(path)  # checks the members load and share a baseline
    except Exception:
        path.unlink(missing_ok=True)
        raise
    print(f"wrote {path}: {len(ens)} members, baseline {ens.baseline.tolist()}, fingerprint {model_fingerprint(ens)}")
    return 0


def add_parsers(sub: c.Subparsers) -> None:
    """Register train, evaluate, table and ensemble."""
    _add_train(sub)
    _add_evaluate(sub)
    _add_table(sub)
    _add_ensemble(sub)
