"""Pins of the original SIS pipeline's semantics that the rest of the suite leaves open.

* ``Exact(rank_by="probability")`` ranks by the softmax probability ``p`` of the
  target, highest first (not by ``−p``), bit for bit like a plain loop with one
  candidate per forward call, on unsaturated float32 models.
* FindSIS accepts a prefix whose value is *exactly* at τ (``f ≥ τ``, not ``f > τ``),
  both when reading the trace and when re-verifying with the model.
* Where the fully masked image already reaches τ, the original FindSIS returns an
  empty SIS; this package returns the last-removed feature (a SIS is never empty)
  unless ``allow_empty=True`` (the paper's behaviour, in FindSIS and SIScollection).
* The original pipeline's Inception-v3 transform (resize 299, centre crop 299):
  ``imagenet_classifier(transform="paper")``.
* ``transfer`` and ``compare_rankings`` (``overinterp subsets transfer|compare``)
  on hand-made 4×4 jobs, with every expected number worked out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor, nn

import overinterp
from overinterp import BackselectTrace, Exact, backselect, logit, patch_features
from overinterp.experiments import compare_rankings, transfer
from overinterp.jobs import JobOutput
from reference import TinyCNN, TwoClassLinear

# ---------------------------------------------------------------------------
# 1. the original pipeline's probability ranking
# ---------------------------------------------------------------------------


def _logodds32(z: Tensor, t: int) -> Tensor:
    """Target log-odds of one float32 logit row: ``z_t − logsumexp_{j≠t} z_j``."""
    return z[t] - torch.logsumexp(torch.cat([z[:t], z[t + 1 :]]), 0)


@torch.no_grad()
def original_probability_backselect(
    model: nn.Module, image: Tensor, target: int, baseline: Tensor, groups: Tensor | None = None
) -> tuple[list[int], list[float], list[float]]:
    """The original BackSelect, one candidate per forward call: at each step mask each
    remaining feature in turn (masked value = ``baseline``), score it by
    ``torch.softmax(logits, 1)[:, t]`` in float32, keep the highest (ties: lowest id).

    Returns the order and, per step, the chosen candidate's ``p`` and log-odds.
    """
    c, h, w = image.shape
    if groups is None:
        groups = torch.arange(h * w).view(h, w)
    base = baseline.expand(c, h, w)
    cur = image.clone()
    remaining = list(range(int(groups.max()) + 1))
    order: list[int] = []
    probs: list[float] = []
    logodds: list[float] = []
    while remaining:
        best = None  # (feature, p, log-odds)
        for f in remaining:  # ascending ids; strict '>' keeps the lowest id on ties
            cand = cur.clone()
            m = groups == f
            cand[:, m] = base[:, m]
            logits = model(cand.unsqueeze(0))
            p = torch.softmax(logits, 1)[:, target]
            if best is None or float(p) > best[1]:
                best = (f, float(p), float(_logodds32(logits[0], target)))
        f, p, lo = best
        order.append(f)
        probs.append(p)
        logodds.append(lo)
        remaining.remove(f)
        m = groups == f
        cur[:, m] = base[:, m]
    return order, probs, logodds


@torch.no_grad()
def _first_step_probabilities(model, image, target, baseline, groups) -> Tensor:
    """``p`` of the target after masking each single feature of the full image."""
    c, h, w = image.shape
    base = baseline.expand(c, h, w)
    out = []
    for f in range(int(groups.max()) + 1):
        cand = image.clone()
        m = groups == f
        cand[:, m] = base[:, m]
        out.append(float(torch.softmax(model(cand.unsqueeze(0)), 1)[0, target]))
    return torch.tensor(out, dtype=torch.float64)


SIZES = [(5, 4), (6, 6)]


def _unsaturated(h: int, w: int, seed: int) -> TinyCNN:
    # scale 0.25: logits of a few units at most, so p stays well below 1 in float32
    return TinyCNN(num_classes=3, height=h, width=w, seed=seed, scale=0.25)


def _check_against_original(trace, network, images, baseline, groups):
    h, w = images.shape[2:]
    if groups is None:
        groups_ref = torch.arange(h * w).view(h, w)
    else:
        groups_ref = groups
    max_p = 0.0
    for i in range(images.shape[0]):
        t = int(trace.target[i])
        order, probs, lo = original_probability_backselect(network, images[i], t, baseline, groups)
        max_p = max(max_p, max(probs))
        assert trace.order[i].tolist() == order, i
        # the recorded value of each prefix is the chosen candidate's log-odds (batched
        # forward calls round differently from single ones in the last bits only)
        torch.testing.assert_close(trace.logodds[i], torch.tensor(lo, dtype=torch.float32), rtol=0, atol=1e-6)
        # ... and its probability is the p the original pipeline ranked by
        torch.testing.assert_close(
            trace.probability[i], torch.tensor(probs, dtype=torch.float64), rtol=0, atol=1e-6, check_dtype=False
        )
        # the first step took the argmax of p, not the argmin (what ranking by −p would take)
        p1 = _first_step_probabilities(network, images[i], t, baseline, groups_ref)
        assert p1.max() > p1.min()
        assert order[0] == int(p1.argmax()) != int(p1.argmin())
        # and the original loop's first p is exactly that maximum
        assert probs[0] == float(p1.max())
    assert bool(trace.evaluated.all())
    assert max_p < 0.99, "the model must be unsaturated for this test"
    return max_p


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("grouped", [False, True], ids=["pixels", "patches"])
@pytest.mark.parametrize("batch_size", [7, 64])
def test_probability_ranking_equals_original_plain_module(h, w, grouped, batch_size):
    model = _unsaturated(h, w, seed=7)
    images = torch.rand(4, 3, h, w, generator=torch.Generator().manual_seed(3))
    mask_value = torch.tensor([0.1, 0.2, 0.3])
    groups = patch_features(h, w, 2) if grouped else None
    trace = backselect(
        model,
        images,
        method=Exact(rank_by="probability"),
        mask_value=mask_value,
        features=groups,
        batch_size=batch_size,
        progress=False,
    )
    assert trace.method["params"]["rank_by"] == "probability"
    _check_against_original(trace, model, images, mask_value.view(3, 1, 1), groups)


@pytest.mark.parametrize("h, w", SIZES)
@pytest.mark.parametrize("grouped", [False, True], ids=["pixels", "patches"])
def test_probability_ranking_equals_original_normalising_classifier(h, w, grouped):
    """A normalising Classifier masks with the dataset mean: 0 in the network's input space."""
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    network = _unsaturated(h, w, seed=5)
    clf = overinterp.Classifier(network, preprocessing=(mean, std)).eval()
    pixels = torch.rand(3, 3, h, w, generator=torch.Generator().manual_seed(8))
    groups = patch_features(h, w, (2, 3)) if grouped else None
    trace = backselect(clf, pixels, method=Exact(rank_by="probability"), features=groups, batch_size=16, progress=False)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    normalised = (pixels - m) / s  # what the network sees; the masked value is 0 there
    assert torch.equal(trace.baseline, m[0].expand(3, h, w))
    _check_against_original(trace, network, normalised, torch.zeros(3, 1, 1), groups)


# ---------------------------------------------------------------------------
# 2. FindSIS at exactly τ
# ---------------------------------------------------------------------------

# logit(τ) is exactly representable for these τ (in float64 and float32)
TAU_AT = [(0.5, 0.0), (0.7310585786300049, 1.0)]  # sigmoid(0), sigmoid(1)


def _line_model(offset: float) -> TwoClassLinear:
    """Logits ``[0, m]`` on ``1×1×4`` images, ``m = −x0 + x1 + 2·x2 + 3·x3 − 3 + offset``:
    the target log-odds of class 1 is ``m`` itself, exact small integers in float32."""
    weight = torch.tensor([-1.0, 1.0, 2.0, 3.0]).view(1, 1, 4)
    return TwoClassLinear(weight, bias=-3.0 + offset).eval()


@pytest.mark.parametrize("tau, at", TAU_AT)
def test_find_sis_accepts_a_prefix_exactly_at_tau(tau, at):
    assert logit(tau) == at
    model = _line_model(at)
    # image 0: all ones. Greedy removes the smallest contribution first: 0 (−1), 1, 2, 3;
    # margins after each removal: at+3, at+2, at+0, at−3; keeping only {3} gives exactly `at`.
    # image 1: only x3 = 1: removing 0, 1, 2 changes nothing (ties → id order); the full
    # image, and every suffix down to {3}, is exactly at τ.
    images = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0]]).view(2, 1, 1, 4)
    for method in (Exact(), Exact(rank_by="probability")):
        trace = backselect(model, images, target=[1, 1], method=method, batch_size=5, progress=False)
        assert trace.order.tolist() == [[0, 1, 2, 3], [0, 1, 2, 3]]
        assert trace.full_logodds.tolist() == [at + 2, at]
        assert trace.logodds[0].tolist() == [at + 3, at + 2, at, at - 3]
        assert trace.logodds[1].tolist() == [at, at, at, at - 3]
        res = trace.find_sis(tau)
        assert [s.tolist() for s in res] == [[3], [3]]  # with '>' : [2, 3] and None
        assert res.logodds.tolist() == [at, at]
        checked = trace.find_sis(tau, model, images)
        assert checked.verified and checked.extended == 0
        assert [s.tolist() for s in checked] == [[3], [3]]
        assert checked.logodds.tolist() == [at, at]
        # just above τ the boundary prefix no longer counts
        above = trace.find_sis(float(torch.sigmoid(torch.tensor(at + 1e-6, dtype=torch.float64))))
        assert above[0].tolist() == [2, 3] and above[1] is None


# ---------------------------------------------------------------------------
# 3. the empty-SIS case
# ---------------------------------------------------------------------------


def test_fully_masked_image_reaching_tau_gives_the_last_feature_not_an_empty_sis():
    """The original FindSIS returns ∅ when the fully masked image already reaches τ;
    this package walks back from the last-removed feature and so returns that one
    feature. Pinned so that a change is deliberate."""
    model = _line_model(5.0)  # fully masked: m = 2 > 0 = logit(0.5)
    images = torch.ones(2, 1, 1, 4)
    images[1, 0, 0, 3] = 0.0
    trace = backselect(model, images, target=[1, 1], batch_size=5, progress=False)
    # image 0: margins 7 (full), then 8, 7, 5, 2 (fully masked, still ≥ 0)
    # image 1: x3 = 0 so feature 3 ties with nothing removed; order 0, 3, 1, 2 — masking
    # 3 (contribution 0) after 0 (−1), margins 4 (full) → 5, 5, 4, 2
    assert trace.order.tolist() == [[0, 1, 2, 3], [0, 3, 1, 2]]
    assert trace.logodds.tolist() == [[8.0, 7.0, 5.0, 2.0], [5.0, 5.0, 4.0, 2.0]]
    assert trace.logodds[:, -1].min() >= logit(0.5)  # the empty set is sufficient
    for res in (trace.find_sis(0.5), trace.find_sis(0.5, model, images)):
        assert [s.tolist() for s in res] == [[3], [2]]  # the last-removed feature, never []
        assert res.sizes == [1, 1]
        assert res.logodds.tolist() == [5.0, 4.0]
        assert all(s is not None and s.numel() >= 1 for s in res)
    assert trace.find_sis(0.5, model, images).extended == 0


def test_allow_empty_gives_the_papers_empty_sis():
    """The original FindSIS: the fully masked image reaches τ, so the empty set is the SIS."""
    model = _line_model(5.0)
    images = torch.ones(2, 1, 1, 4)
    images[1, 0, 0, 3] = 0.0
    trace = backselect(model, images, target=[1, 1], batch_size=5, progress=False)
    for res in (trace.find_sis(0.5, allow_empty=True), trace.find_sis(0.5, model, images, allow_empty=True)):
        assert [s.tolist() for s in res] == [[], []] and res.sizes == [0, 0]
        assert res.logodds.tolist() == [2.0, 2.0]  # the fully masked image's log-odds
    assert not trace.sis_mask(trace.find_sis(0.5, allow_empty=True)).any()
    # where the fully masked image is short of τ, nothing changes: logit(τ) = 3 > 2 (the values above)
    tau = float(torch.sigmoid(torch.tensor(3.0, dtype=torch.float64)))
    for verify in ((), (model, images)):
        paper, here = trace.find_sis(tau, *verify, allow_empty=True), trace.find_sis(tau, *verify)
        assert [s.tolist() for s in paper] == [s.tolist() for s in here] == [[3], [2]]
    # the trace says "empty suffices" but the model re-checked disagrees (fully masked: m = −0.5 < 0):
    # the usual walk from the last-removed feature ({3}: 2.5, {2}: 1.5, both ≥ 0)
    checked = trace.find_sis(0.5, _line_model(2.5), images, allow_empty=True)
    assert [s.tolist() for s in checked] == [[3], [2]] and checked.logodds.tolist() == [2.5, 1.5]
    # SIScollection: one empty SIS and no more, against several one-feature SIS without allow_empty
    paper = overinterp.sis_collection(model, images, 0.5, target=[1, 1], batch_size=5, progress=False, allow_empty=True)
    assert [[s.tolist() for s in c] for c in paper] == [[[]], [[]]]
    here = overinterp.sis_collection(model, images, 0.5, target=[1, 1], batch_size=5, progress=False)
    assert all(len(c) > 1 and all(s.numel() >= 1 for s in c) for c in here)


def test_inception_v3_paper_transform_keeps_the_whole_centre_square(monkeypatch):
    from overinterp.models import external
    from overinterp.models.external import imagenet_classifier

    # Inception-v3's own sizes (torchvision's weight metadata) around a stand-in network: building the
    # real 27M-parameter one takes seconds and is covered in tests/models/test_external.py
    spec = external._torchvision_spec("inception_v3")
    monkeypatch.setattr(external, "_torchvision_spec", lambda name: (lambda **kw: nn.Identity(), spec[1]))
    paper = imagenet_classifier("inception_v3", "random", transform="paper")
    assert (paper.input_size, paper.resize, paper.transform) == (299, 299, "paper")
    here = imagenet_classifier("inception_v3", "random")
    assert (here.input_size, here.resize, here.transform) == (299, 342, "torchvision")
    with pytest.raises(ValueError, match="transform must be one of 'torchvision', 'paper'"):
        imagenet_classifier("inception_v3", "random", transform="timm")


# ---------------------------------------------------------------------------
# 4. transfer and ranking comparison on hand-made jobs
# ---------------------------------------------------------------------------

H4 = W4 = 4
LABELS = torch.tensor([1, 0, 0])


def _pair_model(a: int, b: int) -> TwoClassLinear:
    """Logits ``[0, 4·(x_a + x_b) − 2]`` on ``1×4×4`` pixels (ids row-major)."""
    weight = torch.zeros(1, H4, W4)
    weight.view(-1)[[a, b]] = 4.0
    return TwoClassLinear(weight, bias=-2.0).eval()


def _order(last: list[int]) -> list[int]:
    return [f for f in range(H4 * W4) if f not in last] + last


@torch.no_grad()
def _hand_trace(model, pixels: Tensor, orders: list[list[int]], rank_by: str) -> BackselectTrace:
    """A trace with hand-chosen orders; its values are the model's (so re-verification agrees)."""
    n = pixels.shape[0]
    target = model(pixels).argmax(1)
    order = torch.tensor(orders, dtype=torch.int64)
    lo = torch.zeros(n, H4 * W4)
    for i in range(n):
        cur = pixels[i].clone().view(-1)
        for k, f in enumerate(orders[i]):
            cur[f] = 0.0
            z = model(cur.view(1, 1, H4, W4))[0]
            lo[i, k] = _logodds32(z, int(target[i]))
    full = torch.stack([_logodds32(model(pixels[i : i + 1])[0], int(target[i])) for i in range(n)])
    return BackselectTrace(
        order_padded=order,
        logodds_padded=lo,
        evaluated=torch.ones(n, H4 * W4, dtype=torch.bool),
        num_features=torch.full((n,), H4 * W4, dtype=torch.int64),
        target=target,
        full_logodds=full,
        method={"name": "exact", "params": {"rank_by": rank_by}},
        image_shape=(1, H4, W4),
        baseline=torch.zeros(1, H4, W4),
        labels=LABELS.clone(),
    )


@dataclass
class HandJob(JobOutput):
    """A job held in memory: its images and model are given, not read from files."""

    images: Tensor | None = None
    model: nn.Module | None = None

    def load_images(self) -> Tensor:
        return self.images

    def load_model(self) -> nn.Module:
        return self.model


def _job(name: str, model, images: Tensor, orders, positions, rank_by="logodds") -> HandJob:
    trace = _hand_trace(model, images.float() / 255.0, orders, rank_by)
    return HandJob(
        out_dir=Path("hand") / name,
        manifest={
            "identity": {
                "model_name": name,
                "data_fingerprint": "hand-made",
                "image_shape": [1, H4, W4],
                "classes": ["c0", "c1"],
            }
        },
        spec=SimpleNamespace(dataset="hand:test"),
        trace=trace,
        positions=torch.tensor(positions),
        shards=[0],
        images=images,
        model=model,
    )


@pytest.fixture(scope="module")
def hand_jobs():
    """Three 4×4 images: white, white, black; labels 1, 0, 0. Masked pixels are 0.

    Model A looks at pixels 5 and 6 (centre of row 1), model B at pixels 0 and 1.
    A's kept 25% (last 4 removed): {9,10,5,6}, {0,1,2,3}, {12..15};
    B's: {2,3,0,1}, {5,6,0,1}, {12..15}.
    """
    images = torch.zeros(3, 1, H4, W4, dtype=torch.uint8)
    images[:2] = 255
    a = _job("A", _pair_model(5, 6), images, [_order([9, 10, 5, 6]), _order([5, 6, 0, 1, 2, 3]), _order([])], [0, 1, 2])
    b = _job(
        "B",
        _pair_model(0, 1),
        images,
        [_order([2, 3, 0, 1]), _order([5, 6, 0, 1]), _order([])],
        [0, 1, 2],
        rank_by="probability",
    )
    return a, b


def test_hand_jobs_are_what_the_hand_computation_assumes(hand_jobs):
    a, b = hand_jobs
    assert a.trace.target.tolist() == [1, 1, 0] == b.trace.target.tolist()
    kept = {f for f in range(16) if a.trace.keep_mask(0.25)[0].view(-1)[f]}
    assert kept == {5, 6, 9, 10}
    # τ = 0.9: logit 2.197; both pair pixels present → 6 (ok), one → 2 (short), black image → class 0 at 2
    sa, sb = a.trace.find_sis(0.9, a.model, a.images.float() / 255), b.trace.find_sis(0.9)
    assert [None if s is None else sorted(s.tolist()) for s in sa] == [[5, 6], [0, 1, 2, 3, 5, 6], None]
    assert [None if s is None else sorted(s.tolist()) for s in sb] == [[0, 1], [0, 1], None]


def test_transfer_by_hand(hand_jobs):
    recs = transfer(list(hand_jobs), threshold=0.9, fraction=0.25)
    got = {(r["from"], r["to"]): (r["subset_accuracy"], r["sis_transfer"], r["n_sis"], r["n"]) for r in recs}
    assert got == {
        # A on A's subsets: centre → 1 ✓ (label 1), top row → 0 ✓ (label 0), black → 0 ✓
        # A's SIS ({5,6} and {0,1,2,3,5,6}) suffice for A (6 ≥ 2.197)
        ("A", "A"): (1.0, 1.0, 2, 3),
        # B on A's subsets: centre → 0 ✗, top row → 1 ✗, black → 0 ✓; B on A's SIS:
        # {5,6} → −2 ✗, {0,1,2,3,5,6} → 6 ✓
        ("A", "B"): (1 / 3, 0.5, 2, 3),
        # B on B's subsets: {0,1,2,3} → 1 ✓, {0,1,5,6} → 1 ✗ (label 0), black ✓; B's SIS suffice for B
        ("B", "B"): (2 / 3, 1.0, 2, 3),
        # A on B's subsets: {0,1,2,3} → 0 ✗, {0,1,5,6} → 1 ✗, black ✓; A on B's SIS {0,1}: −2 twice
        ("B", "A"): (1 / 3, 0.0, 2, 3),
    }


def _subset(job: HandJob, index: list[int], positions: list[int]) -> HandJob:
    trace = job.trace.select(index)
    return HandJob(
        out_dir=job.out_dir.with_name(job.out_dir.name + "-few"),
        manifest=job.manifest,
        spec=job.spec,
        trace=trace,
        positions=torch.tensor(positions),
        shards=[0],
        images=job.images[torch.tensor(index)],
        model=job.model,
    )


def test_compare_rankings_by_hand(hand_jobs):
    a, b = hand_jobs
    r = compare_rankings(a, b, fraction=0.25)
    # image 0: {5,6,9,10} vs {0,1,2,3}: ∩ 0, ∪ 8; image 1: {0,1,2,3} vs {0,1,5,6}: ∩ 2, ∪ 6;
    # image 2: {12..15} both: ∩ 4, ∪ 4
    assert r["n"] == 3
    assert r["kept_per_image"] == 4.0
    assert r["overlap_mean"] == pytest.approx((0 + 2 / 4 + 4 / 4) / 3, abs=1e-15)
    assert r["jaccard_mean"] == pytest.approx((0 + 2 / 6 + 4 / 4) / 3, abs=1e-15)
    assert r["shared_pixels_mean"] == 2.0
    # bottom quarter = the last row: only image 2's 4 of the 12 kept pixels, in both
    assert r["bottom_rows_share_a"] == pytest.approx(4 / 12) and r["bottom_rows_share_b"] == pytest.approx(4 / 12)
    assert (r["rank_by_a"], r["rank_by_b"]) == ("logodds", "probability")
    same = compare_rankings(a, a, fraction=0.25)
    assert same["overlap_mean"] == 1.0 and same["jaccard_mean"] == 1.0 and same["shared_pixels_mean"] == 4.0


def test_compare_rankings_pairs_images_by_dataset_position(hand_jobs):
    """B restricted to positions [2, 0] (in that order): image 0 ↔ B's row 1, image 2 ↔ row 0."""
    a, b = hand_jobs
    few = _subset(b, [2, 0], [2, 0])
    r = compare_rankings(a, few, fraction=0.25)
    # pairs: position 0 ({5,6,9,10} vs {0,1,2,3}: 0, 0) and position 2 (identical: 1, 1)
    assert r["n"] == 2
    assert r["overlap_mean"] == 0.5 and r["jaccard_mean"] == 0.5 and r["shared_pixels_mean"] == 2.0
    r2 = compare_rankings(few, a, fraction=0.25)
    assert r2["n"] == 2 and r2["overlap_mean"] == 0.5 and r2["jaccard_mean"] == 0.5
