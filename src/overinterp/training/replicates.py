"""Train replicates (seeds × architectures) as independent tasks on any executor.

Each run is a :class:`TrainTask` — plain data: the hyperparameters as a dict,
the data as spec strings (``cifar10:train@ROOT``, ``folder:train@x.zip``,
``PATH.npz:train``; see :func:`overinterp.data.open_dataset`), never tensors —
so a Ray worker on another node loads the data itself. Each run trains into its
own folder with :func:`~overinterp.training.trainer.train_classifier`, so a task that is
retried (or a command that is rerun) resumes from that folder's
``checkpoint.pt`` and ends with the same weights as an uninterrupted run.

    tasks = replicate_tasks(make_config("fast"), ["resnet20", "vgg16_bn"], seeds=range(5),
                            train="folder:train@cifar10-jpeg.zip", out_dir="runs")
    train_replicates(tasks, get_executor("ray", num_cpus=4))   # runs/resnet20-seed0, …
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tqdm.auto import tqdm

from overinterp.jobs.executor import Executor, LocalExecutor

__all__ = [
    "TrainTask",
    "replicate_tasks",
    "run_train_task",
    "train_replicates",
    "run_folder_name",
    "portable_dataset_spec",
]


@dataclass(frozen=True)
class TrainTask:
    """One training run, as plain data (pickles; JSON-friendly).

    ``config``: :meth:`TrainConfig.to_dict`; ``train``/``test``: dataset spec
    strings; ``limit``: the first N training images only; ``subset``: then a
    seeded random subset of this many images; ``test_limit``: first N test images; the rest are
    :func:`~overinterp.training.trainer.train_classifier`'s runtime arguments
    (``threads``: torch threads in the task, default the executor's).
    """

    config: dict[str, Any]
    train: str
    out_dir: str
    test: str | None = None
    limit: int | None = None
    subset: int | None = None
    subset_seed: int = 0
    test_limit: int | None = None
    device: str | None = None
    threads: int | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    eval_every: int = 1
    resume: bool = True
    force: bool = False


def run_folder_name(arch: str, seed: int) -> str:
    """``<arch>-seed<k>``: a replicate's run folder inside the output folder."""
    return f"{arch}-seed{seed}"


def replicate_tasks(
    base: Any, archs: Sequence[str], seeds: Iterable[int], train: str, out_dir: str | Path, **runtime: Any
) -> list[TrainTask]:
    """One :class:`TrainTask` per (architecture, seed), in ``out_dir/<arch>-seed<k>``.

    ``base`` is a :class:`~overinterp.training.trainer.TrainConfig` whose ``arch`` and
    ``seed`` are replaced; ``runtime``: the other :class:`TrainTask` fields.
    """
    seeds = [int(s) for s in seeds]
    if not archs or not seeds:
        raise ValueError("need at least one architecture and one seed")
    if len(set(archs)) != len(archs) or len(set(seeds)) != len(seeds):
        raise ValueError(f"architectures and seeds must not repeat: {list(archs)}, {seeds}")
    out = Path(out_dir).resolve()  # absolute: workers may start elsewhere
    return [
        TrainTask(
            config=dataclasses.replace(base, arch=arch, seed=seed).to_dict(),
            train=train,
            out_dir=str(out / run_folder_name(arch, seed)),
            **runtime,
        )
        for arch in archs
        for seed in seeds
    ]


def select_training_images(train: Any, limit: int | None, subset: int | None, subset_seed: int = 0) -> Any:
    """The images a run trains on: the first ``limit`` of ``train`` (a dataset with
    ``subset``), then a random ``subset`` of them drawn with ``subset_seed``."""
    import torch

    if limit is not None and limit < len(train):
        train = train.subset(slice(0, limit))
    if subset is not None and subset < len(train):
        g = torch.Generator().manual_seed(subset_seed)
        train = train.subset(torch.randperm(len(train), generator=g)[:subset])
    return train


def run_train_task(task: TrainTask) -> dict[str, Any]:
    """Train one run (resuming its folder); returns a summary (JSON types)."""
    import torch

    from overinterp.data import open_dataset
    from overinterp.training.trainer import TrainConfig, train_classifier

    if task.threads:
        torch.set_num_threads(task.threads)
    config = TrainConfig.from_dict(task.config)
    train = select_training_images(open_dataset(task.train), task.limit, task.subset, task.subset_seed)
    test = open_dataset(task.test) if task.test else None
    if test is not None and task.test_limit is not None and task.test_limit < len(test):
        test = test.subset(slice(0, task.test_limit))
    t0 = time.perf_counter()
    result = train_classifier(
        config,
        train,
        test,
        task.out_dir,
        resume=task.resume,
        force=task.force,
        device=task.device,
        amp=task.amp,
        channels_last=task.channels_last,
        eval_every=task.eval_every,
        progress=False,
    )
    last = result.history[-1] if result.history else {}
    return {
        "arch": config.arch,
        "seed": config.seed,
        "out_dir": task.out_dir,
        "checkpoint": str(result.checkpoint),
        "epochs": config.epochs,
        "resumed_from": result.resumed_from,
        "seconds": round(time.perf_counter() - t0, 3),
        "threads": torch.get_num_threads(),
        "test_accuracy": last.get("test_accuracy"),
        "test_loss": last.get("test_loss"),
        "test_n": last.get("test_n"),
        "train_n": len(train),
        "test_dataset": task.test,
    }


def train_replicates(
    tasks: Sequence[TrainTask],
    executor: Executor | None = None,
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the training tasks on ``executor`` (default: here, one after another).

    Returns the summaries in task order. Raises the first failure the
    executor's retries cannot cure (finished runs keep their folders; rerunning
    resumes the rest from their checkpoints).
    """
    executor = executor or LocalExecutor()
    folders = [t.out_dir for t in tasks]
    if len(set(folders)) != len(folders):
        raise ValueError("two training tasks share a run folder")
    say = log or (lambda msg: print(msg, file=sys.stderr))
    say(
        f"train: {len(tasks)} runs on executor {executor.name}: "
        + ", ".join(Path(f).name for f in folders[:6])
        + (" …" if len(folders) > 6 else "")
    )
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(tasks), desc="runs", unit="run", disable=not progress, dynamic_ncols=True)

    def on_result(summary: dict[str, Any]) -> None:
        results[summary["out_dir"]] = summary
        bar.update(1)
        acc = summary.get("test_accuracy")
        bar.write(
            f"  {Path(summary['out_dir']).name}: {summary['epochs']} epochs, {summary['seconds']:.1f} s"
            + (f", resumed after epoch {summary['resumed_from']}" if summary["resumed_from"] else "")
            + (f", test accuracy {100 * acc:.2f}%" if acc is not None else ""),
            file=sys.stderr,
        )

    try:
        executor.map(run_train_task, list(tasks), on_result)
    finally:
        bar.close()
    return [results[f] for f in folders]


def portable_dataset_spec(spec: str, root: str | os.PathLike[str] | None = None) -> str:
    """``spec`` with its files as absolute paths, so that workers started in other
    folders (or on other nodes sharing the filesystem) open the same data.

    ``PATH.npz[:PREFIX]`` → absolute path; ``NAME[:SPLIT][@ROOT]`` → ``@ROOT``
    made absolute, ``root`` filling in a missing one (without either, each worker
    uses its own default: ``$OVERINTERP_DATA`` or ``~/.cache/overinterp/data``).
    """
    from overinterp.data.registry import parse_dataset_spec
    from overinterp.data.specs import canonical_spec

    text = canonical_spec(str(spec))
    head, sep, tail = text.rpartition(":")
    if sep and head.lower().endswith(".npz"):
        return f"{Path(head).resolve()}:{tail}"
    if text.lower().endswith(".npz"):
        return str(Path(text).resolve())
    name, split, spec_root = parse_dataset_spec(text)
    where = spec_root or (str(root) if root is not None else None)
    out = name + (f":{split}" if split else "")
    return out + (f"@{Path(where).expanduser().resolve()}" if where else "")
