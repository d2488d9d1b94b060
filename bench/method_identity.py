"""Bit-identity check of every backward-selection method across a refactor.

``capture OUT.pt`` runs every method (several parameter sets, float64 and float32
models, shared and per-image ragged feature maps, SIS collections) at three batch
sizes and saves orders, log-odds, evaluated flags and stats; ``compare A.pt B.pt``
reports every difference (``torch.equal``, NaN = NaN). Run ``capture`` with the
old code on ``PYTHONPATH``, then with the new, then ``compare``.

Usage:  PYTHONPATH=src .venv/bin/python bench/method_identity.py capture /tmp/after.pt
        .venv/bin/python bench/method_identity.py compare /tmp/before.pt /tmp/after.pt
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import overinterp  # noqa: E402
from overinterp import Adaptive, BatchedGradient, Exact, Fast, KStep, Screened  # noqa: E402
from reference import TinyCNN  # noqa: E402

METHODS = {
    "exact": Exact(),
    "exact-prob": Exact(rank_by="probability"),
    "exact-bf16": Exact(autocast="bfloat16"),
    "exact-cl": Exact(channels_last=True),
    "kstep1": KStep(1),
    "kstep3": KStep(3),
    "kstep7": KStep(7),
    "adaptive": Adaptive(step_fraction=0.3, tail=0.2),
    "adaptive-default": Adaptive(),
    "adaptive-grad": Adaptive(step_fraction=0.3, tail=0.2, head="gradient"),
    "gradient1": BatchedGradient(1),
    "gradient3": BatchedGradient(3),
    "gradient3-noise": BatchedGradient(3, noise=1e-6, seed=3),
    "screened2": Screened(rescore_top=2),
    "screened-default": Screened(),
    "fast-a": Fast(step_fraction=0.3, screened=0.5, exact=0.2, width=2),
    "fast-b": Fast(step_fraction=0.3, pool=1.0, screened=0.6, exact=0.1, width=2, recall=2),
    "fast-default": Fast(),
    "fast-norecall": Fast(recall=0, width=4, exact_cap=3),
}
BATCHES = (1, 2, 7, 4096)


def problems():
    g = torch.Generator().manual_seed(5)
    m64 = TinyCNN(num_classes=3, height=6, width=5, seed=1).double()
    x64 = torch.rand(3, 3, 6, 5, generator=g, dtype=torch.float64)
    yield "f64-pixels", m64, x64, None
    m32 = TinyCNN(num_classes=4, height=6, width=6, seed=2)
    x32 = torch.rand(3, 3, 6, 6, generator=g)
    yield "f32-pixels", m32, x32, None
    # per-image group maps with different feature counts (ragged)
    f = torch.stack(
        [
            torch.arange(36).view(6, 6) // 2,  # 18 features
            torch.arange(36).view(6, 6),  # 36
            (torch.arange(36).view(6, 6) // 3),  # 12
        ]
    )
    yield "f32-ragged", m32, x32, f


def capture(out: Path) -> None:
    torch.manual_seed(0)
    res = {}
    for pname, model, x, feats in problems():
        for mname, method in METHODS.items():
            for bs in BATCHES:
                t = overinterp.backselect(model, x, method=method, features=feats, batch_size=bs, progress=False)
                res[(pname, mname, bs)] = {
                    "order": t.order_padded.clone(),
                    "logodds": t.logodds_padded.clone(),
                    "evaluated": t.evaluated.clone(),
                    "num_features": t.num_features.clone(),
                    "meta": {
                        k: v for k, v in t.meta.items() if isinstance(v, (int, float, bool, str)) and k != "created"
                    },
                }
            if feats is None and mname in ("exact", "kstep3", "gradient3", "fast-a", "adaptive"):
                cols = overinterp.sis_collection(
                    model, x, threshold=0.6, method=method, features=feats, batch_size=7, progress=False
                )
                res[(pname, mname, "collection")] = {"sis": [[list(map(int, s)) for s in c] for c in cols]}
    torch.save(res, out)
    print(f"captured {len(res)} runs -> {out}")


def _eq(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.nan_to_num(-1e30), b.nan_to_num(-1e30))
    return a == b


def compare(a_path: Path, b_path: Path) -> int:
    a, b = torch.load(a_path, weights_only=False), torch.load(b_path, weights_only=False)
    bad = 0
    for key in sorted(set(a) | set(b), key=str):
        if key not in a or key not in b:
            print("missing:", key)
            bad += 1
            continue
        for field in a[key]:
            if field == "meta":
                diff = {k: (a[key]["meta"].get(k), b[key]["meta"].get(k)) for k in a[key]["meta"]}
                diff = {k: v for k, v in diff.items() if v[0] != v[1]}
                if diff:
                    print("meta differs:", key, diff)
                    bad += 1
            elif not _eq(a[key][field], b[key][field]):
                print("DIFFERS:", key, field)
                bad += 1
    print(f"{len(a)} runs compared (orders, log-odds, evaluated, lengths, stats, SIS collections): {bad} differences")
    return int(bad > 0)


if __name__ == "__main__":
    if sys.argv[1] == "capture":
        capture(Path(sys.argv[2]))
    else:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
