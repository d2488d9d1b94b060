"""Plain, obviously-correct references and tiny models for the tests."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class TinyCNN(nn.Module):
    """conv-bn-relu → maxpool → conv-relu → flatten → linear; any small image size."""

    def __init__(
        self,
        num_classes: int = 3,
        in_channels: int = 3,
        height: int = 7,
        width: int = 6,
        seed: int = 0,
        scale: float = 0.5,
        bias: bool = True,
    ):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(in_channels, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        h2, w2 = (height + 1) // 2, (width + 1) // 2
        self.linear = nn.Linear(8 * h2 * w2, num_classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * scale)
            self.bn.running_mean.copy_(torch.randn(6, generator=g) * 0.1)
            self.bn.running_var.copy_(torch.rand(6, generator=g) + 0.5)
            if not bias:  # an all-zero image then gets all-zero logits (uniform p)
                for m in (self.conv1, self.conv2, self.linear):
                    m.bias.zero_()
                self.bn.bias.zero_()
                self.bn.running_mean.zero_()
        self.eval()

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(torch.relu(self.bn(self.conv1(x))))
        x = torch.relu(self.conv2(x))
        return self.linear(x.flatten(1))


def ref_logodds(z: Tensor, t: int) -> Tensor:
    others = torch.cat([z[:t], z[t + 1 :]])
    return z[t] - torch.logsumexp(others, 0)


@torch.no_grad()
def reference_backselect(model, image: Tensor, target: int, baseline: Tensor, groups: Tensor | None = None):
    """One image, one candidate per forward call. Returns (order, logodds) lists."""
    c, h, w = image.shape
    if groups is None:
        groups = torch.arange(h * w).view(h, w)
    p = int(groups.max()) + 1
    base = baseline.expand(c, h, w)
    cur = image.clone()
    remaining = list(range(p))
    order, scores = [], []
    while remaining:
        best, best_score = None, None
        for f in remaining:  # ascending ids: a strict '>' keeps the lowest id on ties
            cand = cur.clone()
            m = groups == f
            cand[:, m] = base[:, m]
            s = ref_logodds(model(cand.unsqueeze(0))[0], target)
            if best_score is None or s > best_score:
                best, best_score = f, s
        order.append(best)
        scores.append(float(best_score))
        remaining.remove(best)
        m = groups == best
        cur[:, m] = base[:, m]
    return order, scores


@torch.no_grad()
def score_removal(
    model, image: Tensor, target: int, baseline: Tensor, removed: list[int], groups: Tensor | None = None
) -> float:
    """Log-odds of ``image`` with the features ``removed`` masked (float64 model recommended)."""
    c, h, w = image.shape
    if groups is None:
        groups = torch.arange(h * w).view(h, w)
    base = baseline.expand(c, h, w)
    cur = image.clone()
    for f in removed:
        m = groups == f
        cur[:, m] = base[:, m]
    return float(ref_logodds(model(cur.unsqueeze(0))[0], target))


def _masked(image: Tensor, baseline: Tensor, groups: Tensor, removed: list[int]) -> Tensor:
    c, h, w = image.shape
    base = baseline.expand(c, h, w)
    cur = image.clone()
    for f in removed:
        m = groups == f
        cur[:, m] = base[:, m]
    return cur


def reference_kstep(model, image: Tensor, target: int, baseline: Tensor, step_sizes, groups: Tensor | None = None):
    """One image, one candidate per forward call; ``step_sizes(remaining, total)`` features
    removed per step, best first (ties: lowest id). Returns the order."""
    c, h, w = image.shape
    if groups is None:
        groups = torch.arange(h * w).view(h, w)
    p = int(groups.max()) + 1
    removed: list[int] = []
    with torch.no_grad():
        while len(removed) < p:
            remaining = [f for f in range(p) if f not in removed]
            scored = []
            for f in remaining:
                x = _masked(image, baseline, groups, removed + [f])
                scored.append((-float(ref_logodds(model(x.unsqueeze(0))[0], target)), f))
            scored.sort()  # best first, ties by id
            r = max(1, min(step_sizes(len(remaining), p), len(remaining)))
            removed += [f for _, f in scored[:r]]
    return removed


def reference_gradient(model, image: Tensor, target: int, baseline: Tensor, k: int, groups: Tensor | None = None):
    """One image: Batched Gradient BackSelect with a plain loop. Returns (order, block-end log-odds)."""
    c, h, w = image.shape
    if groups is None:
        groups = torch.arange(h * w).view(h, w)
    p = int(groups.max()) + 1
    base = baseline.expand(c, h, w)
    mask = torch.zeros(p, dtype=image.dtype)
    order: list[int] = []
    ends: list[float] = []
    while True:
        m = mask.clone().requires_grad_(True)
        pix = m[groups]  # (H, W)
        x = image * (1 - pix) + base * pix
        lo = ref_logodds(model(x.unsqueeze(0))[0], target)
        if order:
            ends.append(float(lo.detach()))
        if len(order) == p:
            break
        (g,) = torch.autograd.grad(lo, m)
        cand = sorted((-float(g[f]), f) for f in range(p) if mask[f] == 0)
        block = [f for _, f in cand[:k]]
        order += block
        mask[block] = 1.0
    return order, ends


class TwoClassLinear(nn.Module):
    """Logits ``[0, w·x + b]``: an additive model whose greedy order is known by hand."""

    def __init__(self, weight: torch.Tensor, bias: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(weight)  # (C, H, W): class-1 minus class-0 weights
        self.bias = bias

    def forward(self, x):
        margin = (x * self.weight).flatten(1).sum(1) + self.bias
        return torch.stack([torch.zeros_like(margin), margin], 1)


def reference_fast(
    model,
    image: Tensor,
    target: int,
    baseline: Tensor,
    *,
    step_fraction: float,
    pool: float,
    screened: float,
    exact: float,
    width: int,
    recall: int = 0,
    exact_cap: int = 10**9,
    groups: Tensor | None = None,
    extend: int = 0,
    diagnostics: dict | None = None,
    growth: float = 0.0,
    first_block: int = 4,
):
    """Fast's semantics, one image, one candidate per forward call (float64).

    While more than ceil(screened·P) features remain, a step masks r = max(1, floor(step_fraction·R))
    features (never passing that count), and with ``growth`` at most max(first_block, floor(growth·removed))
    of them (removed: features masked so far); after it, single steps; the last ceil(exact·P) features are
    plain exact steps. A non-exact step: the gradient of the log-odds w.r.t. the mask ranks the remaining
    features (ties: lowest id), the best max(width, ceil(pool·r)) are each scored by a forward pass, the r
    best scores are masked (ties: lowest id). With ``extend`` (no cost cap here) single steps screen
    max(width, ...)·2**k candidates, k starting at 0: after a single step whose best sat at gradient
    position >= L - L//4 of the L screened (or came from recall) k = min(k + 1, extend), else k = max(k - 1,
    0). Returns the order; ``diagnostics`` (a dict) receives per single step the screen width used and the
    rank of its best.
    """
    import math

    c, h, w = image.shape
    if groups is None:
        groups = torch.arange(h * w).view(h, w)
    p = int(groups.max()) + 1
    t_s = min(p, math.ceil(screened * p - 1e-9))
    t_e = min(p, math.ceil(exact * p - 1e-9), exact_cap)
    t_s = max(t_s, t_e)
    masked = torch.zeros(p, dtype=image.dtype)
    stale: dict[int, float] = {}  # feature -> its last exact single-removal score
    level = 0  # screen doublings of the next single step (extend)
    order: list[int] = []
    while p - len(order) > t_e:
        rem = [f for f in range(p) if masked[f] == 0]
        big = len(rem)
        r = int(step_fraction * big)
        if growth:
            r = min(r, max(first_block, int(growth * len(order))))
        r = 1 if big <= t_s else max(1, min(r, big - t_s))
        r = min(r, big - t_e)
        m = masked.clone().requires_grad_(True)
        pix = m[groups]  # (H, W)
        x = image * (1 - pix) + baseline.expand(c, h, w) * pix
        lo = ref_logodds(model(x[None])[0], target)
        (g,) = torch.autograd.grad(lo, m)
        ranked = sorted(rem, key=lambda f: (-float(g[f]), f))
        n_screen = min(big, max(width, math.ceil(pool * r)) * (2**level if r == 1 else 1))
        cands = ranked[:n_screen]
        if recall:
            known = sorted((f for f in rem if f in stale and f not in cands), key=lambda f: (-stale[f], f))
            cands = cands + known[:recall]
        cands = sorted(cands)
        with torch.no_grad():
            scores = [float(score_removal(model, image, target, baseline, order + [f], groups)) for f in cands]
        stale.update(zip(cands, scores))
        best = sorted(range(len(cands)), key=lambda k: (-scores[k], cands[k]))[:r]
        if r == 1:
            pos = ranked[:n_screen].index(cands[best[0]]) if cands[best[0]] in ranked[:n_screen] else n_screen
            bottom = pos >= n_screen - n_screen // 4
            if diagnostics is not None:
                diagnostics.setdefault("width", []).append(n_screen)
                diagnostics.setdefault("rank", []).append(pos)
            level = min(extend, level + 1) if bottom else max(0, level - 1)
        for k in best:
            order.append(cands[k])
            masked[cands[k]] = 1.0
    # the exact end
    while len(order) < p:
        rem = [f for f in range(p) if f not in order]
        with torch.no_grad():
            scores = [float(score_removal(model, image, target, baseline, order + [f], groups)) for f in rem]
        k = max(range(len(rem)), key=lambda j: (scores[j], -rem[j]))
        order.append(rem[k])
    return order
