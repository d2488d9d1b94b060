"""Exactness of the exact engine against a plain one-candidate-at-a-time reference."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import overinterp
from overinterp import Exact, backselect, patch_features
from reference import TinyCNN, TwoClassLinear, reference_backselect, score_removal

H, W = 5, 4  # non-square on purpose: catches row/column mix-ups; P = 20


@pytest.fixture(scope="module")
def reference64(model64, images64):
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    target = model64(images64).argmax(1)
    return [reference_backselect(model64, images64[i], int(target[i]), base) for i in range(len(images64))]


@pytest.mark.parametrize("batch_size", [1, 5, 4096])
def test_float64_order_equals_reference_bitwise(model64, images64, reference64, batch_size):
    trace = backselect(model64, images64, batch_size=batch_size, progress=False)
    for i, (order, scores) in enumerate(reference64):
        assert trace.order[i].tolist() == order
        torch.testing.assert_close(trace.logodds[i].double(), torch.tensor(scores).float().double(), rtol=0, atol=1e-6)
    assert trace.evaluated.all()
    assert trace.P == H * W


def test_any_number_of_images_per_call(model64, images64, reference64):
    together = backselect(model64, images64, batch_size=7, progress=False)
    for i in range(len(images64)):
        alone = backselect(model64, images64[i : i + 1], batch_size=7, progress=False)
        assert torch.equal(alone.order[0], together.order[i])
        assert torch.equal(alone.logodds[0], together.logodds[i])
    pair = backselect(model64, images64[1:], batch_size=3, progress=False)
    assert torch.equal(pair.order, together.order[1:])


def test_explicit_target_and_mask_value(model64, images64):
    base = torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64)
    trace = backselect(model64, images64[:2], target=[2, 0], mask_value=base, batch_size=11, progress=False)
    for i, t in enumerate([2, 0]):
        order, _ = reference_backselect(model64, images64[i], t, base.view(3, 1, 1))
        assert trace.order[i].tolist() == order
    assert trace.target.tolist() == [2, 0]
    assert torch.equal(trace.baseline, base.view(3, 1, 1).expand(3, H, W).float())


def test_group_features_shared_and_per_image(model64, images64):
    shared = patch_features(H, W, 2)  # 3 × 2 patches, edge patches smaller
    trace = backselect(model64, images64, features=shared, batch_size=4, progress=False)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    for i in range(len(images64)):
        order, _ = reference_backselect(model64, images64[i], int(trace.target[i]), base, shared)
        assert trace.order[i].tolist() == order
    # per-image maps with different numbers of groups: ragged P
    g = torch.Generator().manual_seed(5)
    maps = []
    for k in (3, 7, 20):
        m = torch.randint(0, k, (H, W), generator=g)
        m.view(-1)[:k] = torch.arange(k)  # every id used
        maps.append(m)
    per = torch.stack(maps)
    trace = backselect(model64, images64, features=per, batch_size=6, progress=False)
    assert not trace.uniform and trace.num_features.tolist() == [3, 7, 20]
    for i in range(len(images64)):
        order, _ = reference_backselect(model64, images64[i], int(trace.target[i]), base, per[i])
        assert trace.order[i].tolist() == order


def test_float32_same_order_up_to_first_near_tie(model64, images64):
    model32 = copy.deepcopy(model64).float()
    x32 = images64.float()
    trace = backselect(model32, x32, batch_size=13, progress=False)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    for i in range(len(images64)):
        t = int(trace.target[i])
        ref, _ = reference_backselect(model64, images64[i], t, base)
        got = trace.order[i].tolist()
        k = next((j for j in range(len(ref)) if ref[j] != got[j]), None)
        if k is None:
            continue
        # at the first divergence both choices must score the same within float32 noise
        a = score_removal(model64, images64[i], t, base, got[:k] + [ref[k]])
        b = score_removal(model64, images64[i], t, base, got[:k] + [got[k]])
        assert abs(a - b) <= 1e-4 * max(1.0, abs(a)), (i, k, a, b)


def test_saturation_linear_model_order_known_by_hand():
    """Logit margin ≈ 40: float32 p is exactly 1.0 for almost every prefix, so only
    log-odds ranking recovers the greedy order, which for an additive model is the
    features sorted by contribution, smallest first."""
    h = w = 16
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(h * w, generator=g).float()
    contrib = 40.0 / (h * w) + 0.01 * (perm - perm.mean())  # distinct, spaced 0.01
    x = torch.ones(1, 3, h, w)
    weight = (contrib / 3).view(1, h, w).expand(3, h, w).clone()
    model = TwoClassLinear(weight, bias=0.0).eval()
    margin = float(model(x)[0, 1].detach())
    assert 39.0 < margin < 41.0
    assert torch.softmax(model(x).detach(), 1)[0, 1].item() == 1.0  # saturated
    expected = torch.argsort(contrib, stable=True)
    trace = backselect(model, x, batch_size=100, progress=False)
    assert torch.equal(trace.order[0], expected)
    # the original pipeline's probability ranking ties at p == 1 and falls back to index order
    by_p = backselect(model, x, method=Exact(rank_by="probability"), batch_size=100, progress=False)
    assert not torch.equal(by_p.order[0], expected)
    assert by_p.order[0][:5].tolist() == [0, 1, 2, 3, 4]
    assert by_p.method["params"]["rank_by"] == "probability"


def test_ties_go_to_lowest_feature_index():
    # a model blind to the right half: masking any right-half pixel leaves the logits unchanged
    class LeftHalf(nn.Module):
        def forward(self, x):
            s = x[:, :, :, :2].sum((1, 2, 3))
            return torch.stack([-s, s], 1)

    x = torch.ones(1, 1, 2, 4, dtype=torch.float64)
    trace = backselect(LeftHalf().eval(), x, batch_size=3, progress=False)
    # right-half pixels (cols 2,3 → ids 2,3,6,7) are ties removed first in id order
    assert trace.order[0].tolist()[:4] == [2, 3, 6, 7]


def test_channels_last_and_autocast_options_run(model64, images64):
    model32 = copy.deepcopy(model64).float()
    x = images64.float()
    plain = backselect(model32, x, batch_size=16, progress=False)
    cl = backselect(model32, x, method=Exact(channels_last=True), batch_size=16, progress=False)
    torch.testing.assert_close(cl.logodds, plain.logodds, rtol=1e-4, atol=1e-4)
    bf = backselect(model32, x, method=Exact(autocast="bfloat16"), batch_size=16, progress=False)
    assert bf.method["params"]["autocast"] == "bfloat16"
    assert torch.isfinite(bf.logodds).all()


def test_classifier_takes_pixels_and_carries_baseline():
    net = TinyCNN(num_classes=4, height=H, width=W, seed=3).double()
    clf = overinterp.Classifier(net, preprocessing=((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))).double().eval()
    x = torch.rand(2, 3, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    trace = backselect(clf, x, batch_size=32, progress=False)
    # the default baseline is the preprocessing mean in pixel space: 0 after normalisation
    base = torch.tensor([0.4, 0.5, 0.6], dtype=torch.float64).view(3, 1, 1)
    for i in range(2):
        order, _ = reference_backselect(clf, x[i], int(trace.target[i]), base)
        assert trace.order[i].tolist() == order
    assert torch.allclose(trace.baseline[:, 0, 0], base.flatten().float())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)")
def test_cpu_and_cuda_agree(model64, images64):
    cpu = backselect(model64, images64, batch_size=9, progress=False)
    gpu = backselect(copy.deepcopy(model64).cuda(), images64.cuda(), batch_size=9, progress=False)
    assert torch.equal(cpu.order, gpu.order)
    torch.testing.assert_close(cpu.logodds, gpu.logodds, rtol=0, atol=1e-5)


def test_autocast_runs_the_forward_in_reduced_precision():
    """``Exact(autocast="bfloat16")`` records, for every prefix, the log-odds of the model's
    forward *under bfloat16 autocast* (plain reference: one prefix per call, same semantics).

    Wrong implementation caught: ``autocast`` accepted and recorded in the trace but silently
    ignored (the forward runs in float32): the log-odds then match the float32 forward instead,
    which differs from the bf16 one by far more than the tolerance here."""
    model = TinyCNN(num_classes=3, height=H, width=W, seed=3).eval()
    x = torch.rand(2, 3, H, W, generator=torch.Generator().manual_seed(4))
    bf = backselect(model, x, method=Exact(autocast="bfloat16"), batch_size=64, progress=False)
    ref_bf, ref_32 = torch.empty(2, H * W), torch.empty(2, H * W)
    with torch.no_grad():
        for i in range(2):
            cur, t = x[i : i + 1].clone(), bf.target[i : i + 1]
            for k, f in enumerate(bf.order[i].tolist()):
                cur.view(1, 3, -1)[..., f] = 0.0  # mask pixel f (baseline 0)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    ref_bf[i, k] = overinterp.target_logodds(model(cur), t)
                ref_32[i, k] = overinterp.target_logodds(model(cur), t)
    gap = (ref_bf - ref_32).abs().max()
    assert gap > 1e-2  # bf16 rounding is visible on this model
    torch.testing.assert_close(bf.logodds, ref_bf, rtol=0, atol=float(gap) / 10)
