"""Batched Gradient BackSelect (paper S5) against a plain reference and known answers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from overinterp import BatchedGradient, Exact, backselect, patch_features
from reference import TinyCNN, TwoClassLinear, reference_gradient, score_removal

H, W = 5, 4


@pytest.mark.parametrize("k", [1, 3, 7, 11, 20])
def test_matches_plain_reference(model64, images64, k):
    base = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64).view(3, 1, 1)
    trace = backselect(
        model64, images64, method=BatchedGradient(k), mask_value=base.flatten(), batch_size=2, progress=False
    )
    for i in range(len(images64)):
        order, ends = reference_gradient(model64, images64[i], int(trace.target[i]), base, k)
        assert trace.order[i].tolist() == order
        # block ends (and only they) are evaluated, with the block-end log-odds
        p = H * W
        block_ends = [min(j + k, p) - 1 for j in range(0, p, k)]
        assert trace.evaluated[i].nonzero().flatten().tolist() == block_ends
        torch.testing.assert_close(trace.logodds[i, block_ends].double(), torch.tensor(ends).float().double())
    assert trace.meta["forward_backward_passes"] == len(images64) * (-(-H * W // k) + 1)


def test_group_features_match_reference(model64, images64):
    groups = patch_features(H, W, 2)
    trace = backselect(model64, images64, method=BatchedGradient(2), features=groups, batch_size=4, progress=False)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    for i in range(len(images64)):
        order, _ = reference_gradient(model64, images64[i], int(trace.target[i]), base, 2, groups)
        assert trace.order[i].tolist() == order


def _saturated_linear(h=16, w=16):
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(h * w, generator=g).float()
    contrib = 40.0 / (h * w) + 0.01 * (perm - perm.mean())  # distinct, spaced 0.01
    weight = (contrib / 3).view(1, h, w).expand(3, h, w).clone()
    return TwoClassLinear(weight).eval(), contrib


def test_two_class_linear_k1_gives_exactly_the_exact_order():
    """On a linear two-class model the log-odds is linear in the mask, so its gradient
    is exactly each feature's removal effect: k = 1 reproduces exact backward selection
    (the features sorted by contribution, smallest first), here at p = 1.0 in float32."""
    model, contrib = _saturated_linear()
    x = torch.ones(1, 3, 16, 16)
    assert torch.softmax(model(x).detach(), 1)[0, 1].item() == 1.0  # saturated
    exact = backselect(model, x, batch_size=64, progress=False)
    grad = backselect(model, x, method=BatchedGradient(1), batch_size=64, progress=False)
    assert torch.equal(grad.order, exact.order)
    assert torch.equal(grad.order[0], torch.argsort(contrib, stable=True))
    torch.testing.assert_close(grad.logodds, exact.logodds, rtol=0, atol=1e-4)
    # float64 and a non-zero baseline: still identical
    m64 = TwoClassLinear(model.weight.detach().double()).eval()
    x64 = torch.rand(2, 3, 16, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    e64 = backselect(m64, x64, mask_value=0.25, target=1, batch_size=64, progress=False)
    g64 = backselect(m64, x64, mask_value=0.25, target=1, method=BatchedGradient(1), batch_size=64, progress=False)
    assert torch.equal(g64.order, e64.order)


class Scaled(nn.Module):
    def __init__(self, net, factor):
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x):
        return self.net(x) * self.factor


def test_saturated_images_have_no_all_zero_gradient():
    """p rounds to 1.0 in float32, so ∇p is exactly 0; ∇ log-odds is not, at every iteration."""
    net = Scaled(TinyCNN(num_classes=3, height=8, width=8, seed=2), 60.0).eval()
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        p = torch.softmax(net(x), 1).amax(1)
    assert (p == 1.0).all()
    xg = x.clone().requires_grad_(True)
    prob = torch.softmax(net(xg), 1).amax(1).sum()
    (gp,) = torch.autograd.grad(prob, xg)
    assert (gp == 0).all()  # the confidence itself gives no ranking at all
    for k in (1, 5):
        trace = backselect(net, x, method=BatchedGradient(k), batch_size=8, progress=False)
        assert trace.meta["zero_gradient_passes"] == 0
        assert trace.meta["forward_backward_passes"] == 3 * (-(-64 // k) + 1)
        assert all(sorted(o.tolist()) == list(range(64)) for o in trace.order)


def test_find_sis_pops_whole_blocks_and_is_verified():
    model = TinyCNN(num_classes=3, height=6, width=5, seed=4, bias=False).double()
    x = torch.rand(4, 3, 6, 5, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    k = 4
    trace = backselect(model, x, method=BatchedGradient(k), batch_size=16, progress=False)
    res = trace.find_sis(0.6, model, x)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    ends = {min(j + k, 30) for j in range(0, 30, k)}  # prefix lengths at block ends
    assert any(s is not None for s in res)
    for i, s in enumerate(res):
        if s is None:
            continue
        if res.extended == 0:
            assert 30 - len(s) in ends | {0}
        removed = trace.order[i][: 30 - len(s)].tolist()
        assert score_removal(model, x[i], int(trace.target[i]), base, removed) >= torch.logit(torch.tensor(0.6)).item()


def test_ties_go_to_lowest_id_and_noise_breaks_them():
    class LeftHalf(nn.Module):  # blind to the right half: zero gradient there
        def forward(self, x):
            s = x[:, :, :, :2].sum((1, 2, 3))
            return torch.stack([-s, s], 1)

    model = LeftHalf().eval()
    x = torch.ones(2, 1, 2, 4, dtype=torch.float64)
    plain = backselect(model, x, method=BatchedGradient(1), batch_size=3, progress=False)
    exact = backselect(model, x, batch_size=3, progress=False)
    assert plain.order[0].tolist()[:4] == [2, 3, 6, 7] == exact.order[0].tolist()[:4]
    noisy = backselect(model, x, method=BatchedGradient(1, noise=1e-6, seed=3), batch_size=3, progress=False)
    assert sorted(noisy.order[0].tolist()[:4]) == [2, 3, 6, 7]  # noise only reorders true ties
    assert noisy.order[0].tolist()[:4] != [2, 3, 6, 7]
    again = backselect(model, x[:1], method=BatchedGradient(1, noise=1e-6, seed=3), batch_size=1, progress=False)
    assert torch.equal(again.order[0], noisy.order[0])  # deterministic, layout-independent
    assert noisy.method["params"]["noise"] == 1e-6


def test_float32_block_order_close_to_float64(model64, images64):
    """float32 differs from float64 only by rounding: compare the first block."""
    import copy

    m32 = copy.deepcopy(model64).float()
    a = backselect(m32, images64.float(), method=BatchedGradient(5), progress=False)
    b = backselect(model64, images64, method=BatchedGradient(5), progress=False)
    for i in range(len(images64)):
        assert set(a.order[i, :5].tolist()) == set(b.order[i, :5].tolist())


def test_non_differentiable_model_refused(images64):
    class NoGrad(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = TinyCNN(num_classes=3, height=H, width=W, seed=1).double()

        def forward(self, x):
            with torch.no_grad():
                return self.net(x)

    with pytest.raises(TypeError, match="differentiable"):
        backselect(NoGrad().eval(), images64, method=BatchedGradient(2), progress=False)


def test_runs_on_inference_tensors_and_leaves_model_untouched(model64):
    with torch.inference_mode():
        x = torch.rand(2, 3, H, W, dtype=torch.float64)
    before = [p.clone() for p in model64.parameters()]
    trace = backselect(model64, x, method=BatchedGradient(4), progress=False)
    assert trace.evaluated.any()
    assert all(p.grad is None for p in model64.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model64.parameters()))
    assert not model64.training


def test_classifier_with_preprocessing_and_exact_agreement_on_first_step(images64):
    import overinterp

    net = TinyCNN(num_classes=4, height=H, width=W, seed=3).double()
    clf = overinterp.Classifier(net, preprocessing="cifar10").double().eval()
    x = images64.clamp(0, 1)
    t = backselect(clf, x, method=BatchedGradient(1), batch_size=5, progress=False)
    assert all(sorted(o.tolist()) == list(range(H * W)) for o in t.order)
    e = backselect(clf, x, method=Exact(), batch_size=5, progress=False)
    assert t.target.tolist() == e.target.tolist()
