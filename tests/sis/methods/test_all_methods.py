"""Contracts every backward-selection method keeps: batching invariance, honest
evaluated prefixes, sufficiency of every SIS, keep masks, SIS collections."""

from __future__ import annotations

import math

import pytest
import torch

from overinterp import (
    Adaptive,
    BatchedGradient,
    Exact,
    Fast,
    KStep,
    Method,
    Screened,
    backselect,
    logit,
    patch_features,
    sis_collection,
)
from reference import TinyCNN, score_removal

H, W = 5, 4  # P = 20

#: One instance of every method, with parameters that make its special paths run at P = 20.
METHODS: list[Method] = [
    Exact(),
    KStep(1),
    KStep(3),
    Adaptive(step_fraction=0.3, tail=0.2),
    Adaptive(step_fraction=0.3, tail=0.2, head="gradient"),
    BatchedGradient(1),
    BatchedGradient(3),
    BatchedGradient(3, noise=1e-6),
    Screened(rescore_top=2),
    Fast(step_fraction=0.3, screened=0.5, exact=0.2, width=2),
    Fast(step_fraction=0.3, pool=1.0, screened=0.6, exact=0.1, width=2, recall=2),
]
IDS = [f"{m.name}-{i}" for i, m in enumerate(METHODS)]


def same(a, b):
    assert torch.equal(a.order_padded, b.order_padded)
    assert torch.equal(a.evaluated, b.evaluated)
    assert torch.equal(a.logodds_padded.nan_to_num(-99.0), b.logodds_padded.nan_to_num(-99.0))
    assert torch.equal(a.num_features, b.num_features)


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_batching_invariance(model64, images64, method):
    """Identical results for any batch size and any number of images per call (float64)."""
    runs = [backselect(model64, images64, method=method, batch_size=bs, progress=False) for bs in (1, 5, 4096)]
    same(runs[0], runs[1])
    same(runs[0], runs[2])
    for i in range(len(images64)):
        alone = backselect(model64, images64[i : i + 1], method=method, batch_size=7, progress=False)
        assert torch.equal(alone.order[0], runs[0].order[i])
        assert torch.equal(alone.evaluated[0], runs[0].evaluated[i])
        assert torch.equal(alone.logodds[0].nan_to_num(-99.0), runs[0].logodds[i].nan_to_num(-99.0))
    pair = backselect(model64, images64[1:], method=method, batch_size=3, progress=False)
    assert torch.equal(pair.order, runs[0].order[1:])


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_orders_are_permutations_and_evaluated_values_honest(model64, images64, method):
    trace = backselect(model64, images64, method=method, batch_size=8, progress=False)
    assert trace.method == method.describe()
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    for i in range(len(images64)):
        order = trace.order[i].tolist()
        assert sorted(order) == list(range(H * W))
        assert bool(trace.evaluated[i, -1])  # the all-masked end is evaluated by every method
        t = int(trace.target[i])
        for j in trace.evaluated[i].nonzero().flatten().tolist():
            want = score_removal(model64, images64[i], t, base, order[: j + 1])
            assert float(trace.logodds[i, j]) == pytest.approx(want, abs=1e-5)
        assert torch.isnan(trace.logodds[i][~trace.evaluated[i]]).all()


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_every_sis_is_sufficient_and_keep_mask_works(method):
    model = TinyCNN(num_classes=3, height=6, width=5, seed=4, bias=False).double()
    x = torch.rand(4, 3, 6, 5, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    trace = backselect(model, x, method=method, batch_size=16, progress=False)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    found = 0
    for tau in (0.5, 0.9):
        res = trace.find_sis(tau, model, x)
        assert res.verified
        for i, s in enumerate(res):
            if s is None:
                continue
            found += 1
            kept = set(s.tolist())
            removed = [f for f in range(30) if f not in kept]
            assert score_removal(model, x[i], int(trace.target[i]), base, removed) >= logit(tau)
            assert s.tolist() == trace.order[i][30 - len(s) :].tolist()  # a suffix of the order
    assert found > 0
    for frac in (0.05, 0.5):
        m = trace.keep_mask(frac)
        assert (m.sum((1, 2, 3)) == math.ceil(frac * 30 - 1e-9)).all()


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_sis_collection_disjoint_and_sufficient(method):
    model = TinyCNN(num_classes=3, height=6, width=5, seed=4, bias=False).double()
    x = torch.rand(3, 3, 6, 5, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    tau = 0.7
    coll = sis_collection(model, x, tau, method=method, batch_size=32, progress=False)
    target = model(x).argmax(1)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    assert sum(coll.counts) > 0
    for i, sets in enumerate(coll):
        seen: set[int] = set()
        for s in sets:
            ids = set(s.tolist())
            assert ids and not (ids & seen)
            seen |= ids
            removed = [f for f in range(30) if f not in ids]
            assert score_removal(model, x[i], int(target[i]), base, removed) >= logit(tau)


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_ragged_group_maps(model64, images64, method):
    g = torch.Generator().manual_seed(5)
    maps = []
    for k in (3, 7, 20):
        m = torch.randint(0, k, (H, W), generator=g)
        m.view(-1)[:k] = torch.arange(k)
        maps.append(m)
    per = torch.stack(maps)
    trace = backselect(model64, images64, method=method, features=per, batch_size=6, progress=False)
    assert trace.num_features.tolist() == [3, 7, 20]
    for i, k in enumerate((3, 7, 20)):
        assert sorted(trace.order[i].tolist()) == list(range(k))
        alone = backselect(model64, images64[i : i + 1], method=method, features=per[i], batch_size=6, progress=False)
        assert alone.order[0].tolist() == trace.order[i].tolist()
    shared = backselect(model64, images64, method=method, features=patch_features(H, W, 2), progress=False)
    assert shared.P == 6 and shared.evaluated[:, 5].all()


def test_single_step_methods_equal_exact(model64, images64):
    exact = backselect(model64, images64, batch_size=9, progress=False)
    for method in (KStep(1), Adaptive(tail=1.0), Adaptive(step_fraction=0.5, tail=1.0, head="gradient"), Screened()):
        t = backselect(model64, images64, method=method, batch_size=9, progress=False)
        assert torch.equal(t.order, exact.order), method
        torch.testing.assert_close(t.logodds, exact.logodds, rtol=0, atol=1e-6)
        assert t.evaluated.all()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: KStep(0), "k must"),
        (lambda: KStep(2.0), "k must"),
        (lambda: BatchedGradient(0), "k must"),
        (lambda: BatchedGradient(2, noise=-1.0), "noise"),
        (lambda: Adaptive(step_fraction=0.0), "step_fraction"),
        (lambda: Adaptive(tail=1.5), "tail"),
        (lambda: Adaptive(head="magic"), "head"),
        (lambda: Screened(screen="int8"), "screen"),
        (lambda: Screened(rescore_top=0), "rescore_top"),
    ],
)
def test_bad_parameters(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize("method", METHODS, ids=IDS)
def test_nan_logits_on_masked_images_raise(method):
    class NaNWhenMasked(torch.nn.Module):  # fine on the images, NaN once a pixel is at the baseline
        def forward(self, x):
            s = x.flatten(1).sum(1)
            bad = (x == 0).flatten(1).any(1)
            z = torch.stack([s, -s, 0 * s], 1)
            return torch.where(bad.view(-1, 1), torch.full_like(z, float("nan")), z)

    x = torch.rand(2, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) + 0.5
    with pytest.raises(FloatingPointError, match="NaN"):
        backselect(NaNWhenMasked().eval(), x, method=method, progress=False)


@pytest.mark.parametrize("method", [KStep(65), BatchedGradient(65)])
def test_block_larger_than_feature_count_is_refused(method):
    model = TinyCNN(height=8, width=8).eval()
    images = torch.rand(2, 3, 8, 8)
    with pytest.raises(ValueError, match="larger than the 64 features"):
        backselect(model, images, method=method, progress=False)
    backselect(model, images, method=type(method)(64), progress=False)  # k = P is fine


def test_sis_collection_with_ragged_group_maps():
    """Images with different feature counts: once the image with the most features has left the
    collection, the others go on (wrong: the availability mask keeps the full width and no longer
    matches the active images' feature map — the run crashed on a shape mismatch)."""
    model = TinyCNN(num_classes=4, height=6, width=6, seed=2)
    g = torch.Generator().manual_seed(5)
    torch.rand(3, 3, 6, 5, generator=g)  # (draws that give images whose collections end at different rounds)
    x = torch.rand(3, 3, 6, 6, generator=g)
    per = torch.stack([torch.arange(36).view(6, 6) // 2, torch.arange(36).view(6, 6), torch.arange(36).view(6, 6) // 3])
    coll = sis_collection(model, x, 0.6, method=Exact(), features=per, batch_size=7, progress=False)
    for i, sets in enumerate(coll):
        ids = [f for s in sets for f in s.tolist()]
        assert len(ids) == len(set(ids)) and all(0 <= f < (18, 36, 12)[i] for f in ids)
