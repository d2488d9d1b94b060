"""An exact anchor as one trace file: exact backward selection of a dataset job's model on
the first N images of the job's dataset, with PATCH×PATCH features (a cheaper anchor than
per pixel: P = 256 at 32×32 with 2×2 patches). ``bench/frontier.py --job LABEL=OUT@JOB:PATCH``
reads it.

Usage:  .venv/bin/python bench/anchor_trace.py JOB_DIR OUT.pt N [--patch 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys

import torch

import overinterp
from overinterp.data.specs import open_dataset
from overinterp.jobs import load_job


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("job", help="a dataset job folder: its model and dataset are used")
    ap.add_argument("out", help="trace file to write")
    ap.add_argument("n", type=int, help="first N images of the job's dataset")
    ap.add_argument("--patch", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    job = load_job(args.job, allow_partial=True)
    model = job.load_model()
    data = open_dataset(job.spec.dataset)
    x = data.images[: args.n]
    x = x.float() / 255.0 if not x.is_floating_point() else x
    feat = overinterp.patch_features(x.shape[2], x.shape[3], args.patch)
    trace = overinterp.backselect(
        model, x, method=overinterp.Exact(), features=feat, batch_size=args.batch_size, labels=data.labels[: args.n]
    )
    trace.save(args.out)
    print(f"wrote {args.out}: {len(trace)} images, P = {int(trace.num_features[0])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
