"""Batched Gradient BackSelect (Carter et al. 2021, supplement S5).

A mask ``M`` over features (1 = masked) starts at 0 (1 for features that are
not available). Each iteration takes the gradient, with respect to ``M``, of the
target's *log-odds* at the masked input

    x̃ = x ⊙ (1 − M) + b ⊙ M      (M broadcast from features to pixels),

and masks the ``k`` still-unmasked features with the largest entries: masking
feature ``f`` raises the log-odds most, to first order, where ``∂logodds/∂M_f``
is largest. Repeat until every feature is masked; the features of one block are
ordered by their gradient entry, largest first (ties: lowest feature id). The
log-odds, not the confidence ``p``, is differentiated: once float32 ``p`` rounds
to 1 the gradient of ``p`` itself is exactly 0 and carries no ranking.

FindSIS (:meth:`BackselectTrace.find_sis`) then pops blocks back from the end
until ``f ≥ τ``: the trace marks the block ends as evaluated (the forward pass
of each iteration gives the log-odds of the state the previous block left), so
an SIS is a union of whole blocks. As with every method, a returned SIS is
re-verified with a plain forward pass and, if it falls short, extended one
feature at a time along the order.

SIScollection (:func:`overinterp.sis_collection`): after an SIS is found its
features are masked for good and the procedure repeats on the remaining
features, until they alone no longer reach ``τ``. (The paper's pseudo-code
writes this with an extra mask that is 1 *outside* the SIS; what is meant, and
what is implemented, is that the found SIS is removed from further selection:
it is masked for every later round.)

Cost: ``⌈P/k⌉ + 1`` forward+backward passes of one image each (the last pass
only records the all-masked value), batched ``batch_size`` images at a time.
Images stream through the batch: one that finishes is replaced by the next, so
batches stay full with ragged feature counts; the host only does integer
bookkeeping and never reads a gradient back, so nothing synchronises per
iteration.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from overinterp.sis.methods._engine import StepSize, default_channels_last
from overinterp.sis.methods.base import Method, MethodOutput, Problem, param
from overinterp.sis.methods.registry import register
from overinterp.sis.scoring import target_logodds

__all__ = ["BatchedGradient", "run_gradient", "mask_gradient", "differentiable_copies"]


@register
@dataclass(frozen=True)
class BatchedGradient(Method):
    """Batched Gradient BackSelect: mask the ``k`` features with the largest
    gradient of the target's log-odds w.r.t. the mask, repeat.

    Args:
        k: features masked per iteration (block size). ``k = 1`` on a model
            linear in its input gives exactly the exact greedy order.
        noise: ``0`` (default): ties in the gradient go to the lowest feature id.
            ``> 0``: add ``noise · max|∇|·u`` to each row's gradient before
            ranking, ``u ∈ [0, 1)`` a fixed pseudo-random function of
            (feature, features removed so far, seed) — it breaks exact ties the
            same way for every image and batch layout. Keep it tiny (1e-6).
        seed: seed of that noise.
        channels_last: build inputs channels-last (``None``: as :class:`Exact`).
    """

    k: int = param(1, help="features masked per block", low=1)
    noise: float = param(0.0, help="tie-breaking noise, × max|gradient|", low=0.0, cli=False)
    seed: int = param(0, help="seed of the tie-breaking noise", cli=False)
    channels_last: bool | None = param(None, help="build inputs channels-last (None: automatic)", cli=False)

    name: ClassVar[str] = "gradient"
    summary: ClassVar[str] = "Batched Gradient BackSelect: --k features per block by the mask gradient (P/k passes)"
    needs_gradients: ClassVar[bool] = True
    faithful: ClassVar[bool] = False
    faithfulness: ClassVar[str] = (
        "cheap, not faithful (5% subsets far less confident than exact's; bench/results/frontier.md)"
    )
    ladder: ClassVar = (3, {"k": 8})

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")
        if not (float(self.noise) >= 0.0):
            raise ValueError(f"noise must be >= 0, got {self.noise!r}")

    def planned_cost(self, total: int) -> dict[str, int]:
        """Forward+backward passes for one image of ``total`` features: one per block, one to close."""
        return {"forward_backward": _passes(total, 0, lambda remaining, t: int(self.k)), "forward": 0}

    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        k = self.k
        problem.check_block_size(k, "BatchedGradient")
        return run_gradient(
            problem,
            batch_size=batch_size,
            progress=progress,
            step_size=lambda remaining, total: k,
            noise=float(self.noise),
            seed=int(self.seed),
            channels_last=self.channels_last,
        )


def _clip(step_size: StepSize, remaining: int, total: int, stop: int) -> int:
    if remaining <= stop:
        return 0
    return max(1, min(int(step_size(remaining, total)), remaining - stop))


def _passes(count: int, stop: int, step_size: StepSize) -> int:
    if count <= stop:
        return 0
    passes, rem = 1, count  # + the final pass that only records the last block end
    while rem > stop:
        rem -= _clip(step_size, rem, count, stop)
        passes += 1
    return passes


def _tie_noise(features: Tensor, removed: Tensor, seed: int) -> Tensor:
    """``u ∈ [0, 1)``: a fixed hash of (feature id, features removed so far, seed)."""
    v = torch.sin(features.double() * 12.9898 + removed.double() * 78.233 + seed * 37.719) * 43758.5453
    return v - torch.floor(v)


def differentiable_copies(problem: Problem) -> tuple[Tensor, Tensor]:
    """``(images, baseline)`` usable in autograd (inference tensors cannot be saved for backward)."""
    with torch.inference_mode(False):
        src = problem.images.clone() if problem.images.is_inference() else problem.images
        base = problem.baseline.clone() if problem.baseline.is_inference() else problem.baseline
    return src, base


def mask_gradient(
    problem: Problem, src: Tensor, base: Tensor, act: Tensor, masked: Tensor, idx: Tensor, channels_last: bool
) -> tuple[Tensor, Tensor]:
    """One forward+backward pass at the masked states of images ``act``.

    ``masked`` ``(S, Pmax)`` bool (1 = masked), ``idx`` ``(S, H·W)`` feature id
    of each pixel. Returns the target log-odds ``(S,)`` and its gradient with
    respect to the mask ``(S, Pmax)`` (large: masking that feature raises the
    log-odds most, to first order).
    """
    s_n = act.numel()
    h, w = src.shape[-2:]
    with torch.inference_mode(False), torch.enable_grad():
        m_soft = masked.to(src.dtype).requires_grad_(True)
        pix = m_soft.gather(1, idx).view(s_n, 1, h, w)
        x = src[act] * (1 - pix) + base * pix
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        lo = target_logodds(problem.forward(x), problem.target[act])
        if not lo.requires_grad:
            raise TypeError(
                "this method needs a differentiable PyTorch model (its output carries no gradient); "
                "use a forward-only method such as Exact, KStep or Adaptive(head='kstep')"
            )
        (grad,) = torch.autograd.grad(lo.sum(), m_soft)
    return lo.detach(), grad


def run_gradient(
    problem: Problem,
    *,
    batch_size: int,
    progress: bool,
    step_size: StepSize,
    stop: list[int] | None = None,
    noise: float = 0.0,
    seed: int = 0,
    channels_last: bool | None = None,
    desc: str = "gradient",
) -> MethodOutput:
    """Gradient backward selection with a block-size schedule.

    ``step_size(remaining, total)`` gives each block's size; ``stop[i]``: stop
    once image ``i`` has that many available features left (default 0: mask
    all). The state where it stops is evaluated and marked.
    """
    images, fmap = problem.images, problem.features
    device, dtype = images.device, images.dtype
    n, c, h, w = images.shape
    pmax = fmap.max_features
    counts = problem.available_counts().tolist()
    totals = list(counts)
    stop = [0] * n if stop is None else [int(s) for s in stop]

    src, base = differentiable_copies(problem)
    col = torch.arange(pmax, device=device)
    masked = col.view(1, -1) >= fmap.num_features.view(-1, 1)  # (N, Pmax): 1 = masked (pads too)
    if problem.available is not None:
        masked |= ~problem.available
    order = torch.full((n, pmax), -1, dtype=torch.int64, device=device)
    logodds = torch.full((n, pmax), float("nan"), dtype=torch.float32, device=device)
    evaluated = torch.zeros((n, pmax), dtype=torch.bool, device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    zero_rows = torch.zeros((), dtype=torch.int64, device=device)
    removed = [0] * n
    channels_last = default_channels_last(problem, channels_last)
    shared = fmap.shared.flatten() if fmap.shared is not None else None
    groups = fmap.groups.flatten(1) if shared is None else None

    total = sum(_passes(counts[i], stop[i], step_size) for i in range(n))
    pending = deque(i for i in range(n) if counts[i] > stop[i])
    active: list[int] = []
    n_rows = 0
    bar = tqdm(total=total, unit="pass", unit_scale=True, disable=not progress, desc=desc, smoothing=0.05)
    try:
        while pending or active:
            while pending and len(active) < batch_size:
                active.append(pending.popleft())
            s_n = len(active)
            rs = [_clip(step_size, counts[i], totals[i], stop[i]) for i in active]
            act = torch.tensor(active, dtype=torch.int64).to(device, non_blocking=True)
            ms = masked[act]
            idx = shared.expand(s_n, -1) if shared is not None else groups[act]
            lo, grad = mask_gradient(problem, src, base, act, ms, idx, channels_last)
            bad |= ~torch.isfinite(lo).all() | ~torch.isfinite(grad).all()
            n_rows += s_n
            bar.update(s_n)

            # record the block end this pass evaluated (the state the previous block left)
            rec = [s for s, i in enumerate(active) if removed[i] > 0]
            if rec:
                rec_s = torch.tensor(rec, dtype=torch.int64)
                rec_pos = torch.tensor([removed[active[s]] - 1 for s in rec], dtype=torch.int64)
                rec_img = torch.tensor([active[s] for s in rec], dtype=torch.int64)
                rec_s, rec_pos, rec_img = (t.to(device, non_blocking=True) for t in (rec_s, rec_pos, rec_img))
                logodds[rec_img, rec_pos] = lo[rec_s].float()
                evaluated[rec_img, rec_pos] = True

            # mask the next block of each image that still has one
            live = [s for s in range(s_n) if rs[s] > 0]
            if live:
                score = grad.masked_fill(ms, float("-inf"))
                live_d = torch.tensor(live, dtype=torch.int64).to(device, non_blocking=True)
                zero_rows += ((grad == 0) | ms)[live_d].all(1).sum()
                if noise > 0:
                    amax = grad.abs().masked_fill(ms, 0).amax(1, keepdim=True)
                    done = torch.tensor([removed[i] for i in active], dtype=torch.int64).to(device)
                    score = score + noise * amax * _tie_noise(col.view(1, -1), done.view(-1, 1), seed).to(dtype)
                rmax = max(rs)
                top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :rmax]
                lens = torch.tensor([rs[s] for s in live], dtype=torch.int64)
                rows = torch.repeat_interleave(torch.tensor(live, dtype=torch.int64), lens)
                js = torch.arange(int(lens.sum())) - torch.repeat_interleave(lens.cumsum(0) - lens, lens)
                pos = torch.repeat_interleave(torch.tensor([removed[active[s]] for s in live]), lens) + js
                rows, js, pos = (t.to(device, non_blocking=True) for t in (rows, js, pos))
                chosen = top[rows, js]
                img = act[rows]
                order[img, pos] = chosen
                masked[img, chosen] = True

            for i, r in zip(active, rs):
                removed[i] += r
                counts[i] -= r
            active = [i for i, r in zip(active, rs) if r > 0]
    finally:
        bar.close()
    if bool(bad):
        raise FloatingPointError("the model returned NaN or inf logits (or gradients) for some masked images")
    stats = {
        "channels_last": bool(channels_last),
        "forward_backward_passes": n_rows,
        "zero_gradient_passes": int(zero_rows),
    }
    return MethodOutput(order, logodds, evaluated, torch.tensor(removed, dtype=torch.int64, device=device), stats)
