"""Exact per-pixel anchors of the frontier's trained models, as resumable dataset jobs, one
image at a time per model in turn (held-out models first in each round), so that every model
has some anchors early and a stopped run loses at most one image per model.

Each model's anchor is the job ``overinterp backselect-dataset --model SPEC --dataset
../shared/data/cifar10-lossless.npz:test --limit N --method exact --shard-size 1 --threads 1
--batch-size 128 --out runs/anchors/NAME-exact`` (the same identity, so that command resumes or
extends it too); this script only interleaves the models' shards. Models whose TorchScript file
is not there yet (``bench/frontier_models.py`` still training) are skipped until it is.

Usage:  .venv/bin/python bench/frontier_anchors.py [--images 16] [--models adv_resnet,mixer,…]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

ROOT = Path(__file__).resolve().parents[1]
#: held out first (frontier_models ROLES)
PRIORITY = ("mixer", "adv_cnn", "resnet_gn", "resnet_wide", "adv_resnet_deep", "adv_resnet", "cnn_nobn", "cnn_ls")


def job_spec(name: str, models: Path, data: Path, n: int, batch: int):
    from overinterp.data.specs import portable_spec
    from overinterp.jobs import JobSpec
    from overinterp.models.spec import parse_model_spec
    from overinterp.sis.methods import Exact

    return JobSpec(
        model=parse_model_spec(f"{models / name}.ts?preprocessing=cifar10"),
        dataset=portable_spec(f"{data / 'cifar10-lossless.npz'}:test"),
        positions=tuple(range(n)),
        method=Exact().describe(),
        shard_size=1,
        threads=1,
        batch_size=batch,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--models", default=",".join(PRIORITY))
    ap.add_argument("--model-dir", type=Path, default=ROOT / "runs" / "frontier-models")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "anchors")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    import torch

    from overinterp.jobs import job_status, run_job
    from overinterp.jobs.executors import LocalExecutor

    class OneShard(LocalExecutor):
        """The first pending shard only (one image per model per round)."""

        def run(self, tasks: Sequence[Any], on_result: Callable[[Any], None]) -> None:
            super().run(list(tasks)[:1], on_result)

    torch.set_num_threads(1)
    names = [s for s in args.models.split(",") if s]
    rounds = 0
    while True:
        todo = []
        for name in names:
            out = args.out / f"{name}-exact"
            done = job_status(out)["complete"] if (out / "manifest.json").is_file() else 0
            if done < args.images:
                todo.append((name, out))
        if not todo:
            break
        ready = [(name, out) for name, out in todo if (args.model_dir / f"{name}.ts").is_file()]
        if not ready:
            print(f"waiting for {', '.join(n for n, _ in todo)} to be trained", flush=True)
            time.sleep(60)
            continue
        for name, out in ready:  # one image each, in priority order
            t0 = time.perf_counter()
            run_job(
                job_spec(name, args.model_dir, args.data, args.images, args.batch_size), out, OneShard(), progress=False
            )
            st = job_status(out)
            print(
                f"[round {rounds}] {name}: {st['complete']}/{st['shards']} anchored "
                f"({time.perf_counter() - t0:.0f} s), {time.strftime('%H:%M:%S')}",
                flush=True,
            )
        rounds += 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
