"""Engine efficiency: the time the model's raw forward (and forward+backward) passes take for the
same work, ÷ the time ``backselect`` takes (1.0: the engine adds nothing to the model's passes).

One process, one model, batch size and memory layout (channels-last, as the engine
picks for a float32 CNN). Each repeat times, back to back so that background load
hits both alike: the engine run, then the same number of raw forward images (and,
for ``Fast``, raw forward+backward images) in full batches of the same size; the
median over repeats is printed. ``exact``: ``Exact`` on 8 images of 8×8-pixel
features (P = 16, the candidate queue keeps every batch full); ``fast``: ``Fast`` on
4 images of 4×4-pixel features (P = 64).

Paired A/B of two source trees (the issue-22 measure)::

    for i in 1 2 3 4 5; do
      PYTHONPATH=/tmp/old/src .venv/bin/python bench/engine_ratio.py --tag old
      PYTHONPATH=src .venv/bin/python bench/engine_ratio.py --tag new
    done

Each run prints one JSON line ``{"tag", "exact", "fast", ...}``; compare the medians per tag.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from overinterp import Exact, Fast, backselect, patch_features
from overinterp.models import create_model


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", default="run")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model("resnet20", preprocessing="imagenet").eval()
    bs = args.batch
    x = torch.rand(bs, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    xg = x.clone().requires_grad_(True)

    def raw(n_fwd: int, n_fb: int) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, n_fwd, bs):
                model(x[: min(bs, n_fwd - s)])
        for s in range(0, n_fb, bs):
            with torch.enable_grad():
                model(xg[: min(bs, n_fb - s)]).logsumexp(1).sum().backward()
        return time.perf_counter() - t0

    cases = {
        "exact": (Exact(), torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)), 8),
        "fast": (Fast(), torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)), 4),
    }
    out: dict = {"tag": args.tag, "batch": bs, "threads": args.threads}
    for name, (method, images, patch) in cases.items():
        groups = patch_features(32, 32, patch)
        ratios = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            t = backselect(model, images, method=method, features=groups, batch_size=bs, progress=False)
            t_engine = time.perf_counter() - t0
            t_raw = raw(t.meta.get("evaluations", 0), t.meta.get("forward_backward_passes", 0))
            ratios.append(t_raw / t_engine)
        out[name] = round(statistics.median(ratios), 4)
        out[name + "_all"] = [round(r, 3) for r in ratios]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
