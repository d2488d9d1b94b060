"""Fast: backward selection that stays faithful to exact's where it matters, at
about 1% of its cost for one feature per pixel of a 32×32 image (P = 1,024; the
cost is linear in P, so the fraction of exact's P(P+1)/2 is larger for small P).

What the paper's measurements read from an order is its *end*: the 5% kept
subsets are the last-removed 5% of features, and FindSIS walks back from the
end to the smallest suffix that keeps ``f ≥ τ``. So every choice is made on
exact scores, and the evaluations are spent where the order ends. Per image with
``P`` available features, ``T_s = ⌈screened·P⌉`` and ``T_e = min(⌈exact·P⌉,
exact_cap)``:

1. **head** — while more than ``T_s`` features remain, blocks of
   ``r = max(1, ⌊step_fraction·remaining⌋)``: one forward+backward pass ranks
   the remaining features by the gradient of the target log-odds w.r.t. the
   mask, the best ``max(width, ⌈pool·r⌉)`` are each scored *exactly* (one
   forward pass each) and the ``r`` with the highest exact scores are masked;
2. **screened single steps** — from ``T_s`` down to ``T_e``: the same with
   ``r = 1`` (``width`` candidates scored exactly, the best masked; ties: lowest
   feature id). The step equals exact's whenever exact's choice is among them;
3. **exact end** — the last ``T_e`` features: exact single steps.

Every single step's log-odds is the exact value of the prefix it leaves, so
FindSIS and its re-verification see exact numbers there; head block ends are
evaluated too. ``Fast(screened=1, exact=1, exact_cap=P)`` is exact backward
selection; ``width ≥ P`` makes the screened steps exact as well.

Cost per image: one forward+backward pass per head block and per screened step
(about ``ln(P/T_s)/step_fraction + T_s − T_e``), ``Σ min(R, max(width, ⌈pool·r⌉))``
forward passes over the head's blocks and ``width`` per screened step, and
``T_e(T_e+1)/2`` at the end (a constant once the cap binds): linear in ``P``.
:meth:`Fast.planned_cost` counts it exactly; ``bench/frontier.py --scaling``
measures it at P = 256, 1,024 and 4,096.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor
from tqdm.auto import tqdm

from overinterp.sis.methods._engine import StepSize, ceil_fraction, default_channels_last, greedy_select
from overinterp.sis.methods.base import Method, MethodOutput, Problem, append_output, param, without_removed
from overinterp.sis.methods.gradient import differentiable_copies, mask_gradient
from overinterp.sis.methods.registry import register
from overinterp.sis.scoring import target_logodds

__all__ = ["Fast", "run_screened_steps"]


def _fraction(name: str, value: object, low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"Fast: {name} must be a number in {'(0' if low_open else '[0'}, 1], got {value!r}")
    v = float(value)
    if not ((0.0 < v if low_open else 0.0 <= v) and v <= 1.0):
        raise ValueError(
            f"Fast: {name} must lie in {'(0' if low_open else '[0'}, 1] (a fraction of the features), got {value!r}"
        )
    return v


@register
@dataclass(frozen=True)
class Fast(Method):
    """Gradient head, gradient-screened exact single steps, exact end.

    Args:
        step_fraction: each head block masks this fraction of the features
            that remain (at least one).
        pool: a head block of ``r`` features chooses among the
            ``max(width, ⌈pool·r⌉)`` gradient-screened candidates it scores
            exactly (``≥ 1``, finite).
        screened: fraction of each image's features (the last removed) chosen
            by screened single steps or exactly; the head removes the rest.
        exact: fraction of the features (the very last removed) chosen by
            exact single steps; ``exact ≤ screened``.
        exact_cap: at most this many features in the exact end (its cost is
            quadratic in its length; the cap keeps the method linear in ``P``).
        width: candidates per screened step scored exactly (``≥ 1``).
        recall: per step, also score exactly the ``recall`` remaining features
            with the best exact scores from earlier steps that the gradient did
            not pick (``0``: off).
        channels_last: build inputs channels-last (``None``: as :class:`Exact`).
    """

    step_fraction: float = param(0.05, help="head step = this × remaining", low=0.0, high=1.0, low_open=True)
    pool: float = param(2.0, help="candidates scored exactly per head block, × the block size", low=1.0)
    screened: float = param(
        0.08, help="fraction of the features (the last removed) taken by single steps", low=0.0, high=1.0
    )
    exact: float = param(
        0.05,
        help="fraction of the features (the very last) taken by exact steps",
        low=0.0,
        high=1.0,
        flag="--exact-end",
    )
    width: int = param(32, help="gradient-screened candidates scored exactly per single step", low=1)
    recall: int = param(4, help="per step also score the best earlier-scored features the gradient missed", low=0)
    exact_cap: int = param(40, help="at most this many exact end steps", low=0)
    channels_last: bool | None = param(None, help="build inputs channels-last (None: automatic)", cli=False)

    name: ClassVar[str] = "fast"
    summary: ClassVar[str] = (
        "recommended when exact does not fit the budget: about 1% of exact's cost per pixel at 32×32, gradient-"
        "screened exactly scored steps, exact end"
    )
    needs_gradients: ClassVar[bool] = True
    faithfulness: ClassVar[str] = (
        "≈ exact: 5% subsets and SIS within the frontier's targets at about 1% of its cost (32×32; "
        "bench/results/frontier.md)"
    )
    ladder: ClassVar = (1, {})

    def __post_init__(self) -> None:
        sf = _fraction("step_fraction", self.step_fraction, low_open=True)
        s = _fraction("screened", self.screened)
        e = _fraction("exact", self.exact)
        del sf
        if e > s:
            raise ValueError(
                f"Fast: exact ({self.exact}) must not exceed screened ({self.screened}): the exact "
                "end is the last part of the screened tail"
            )
        if (
            isinstance(self.pool, bool)
            or not isinstance(self.pool, (int, float))
            or not (1.0 <= float(self.pool) < math.inf)
        ):
            raise ValueError(
                f"Fast: pool (exactly scored candidates per head block, as a multiple of the block "
                f"size) must be a number >= 1, got {self.pool!r}"
            )
        if isinstance(self.recall, bool) or not isinstance(self.recall, int) or self.recall < 0:
            raise ValueError(f"Fast: recall must be an integer >= 0, got {self.recall!r}")
        if isinstance(self.exact_cap, bool) or not isinstance(self.exact_cap, int) or self.exact_cap < 0:
            raise ValueError(f"Fast: exact_cap must be an integer >= 0, got {self.exact_cap!r}")
        if isinstance(self.width, bool) or not isinstance(self.width, int) or self.width < 1:
            raise ValueError(
                f"Fast: width (candidates scored exactly per screened step) must be an integer >= 1, got {self.width!r}"
            )

    def stage_counts(self, total: int) -> tuple[int, int]:
        """``(T_s, T_e)``: features left when the screened steps and the exact end begin."""
        te = min(ceil_fraction(float(self.exact), total), int(self.exact_cap))
        return max(ceil_fraction(float(self.screened), total), te), te

    def step_size(self, remaining: int, total: int) -> int:
        """Features masked by the next step at ``remaining`` of ``total``: blocks of
        ``max(1, ⌊step_fraction·remaining⌋)`` (so single steps already once fewer
        than ``1/step_fraction`` remain) down to ``⌈screened·P⌉``, single steps after."""
        ts = self.stage_counts(total)[0]
        if remaining <= ts:
            return 1
        return max(1, min(int(float(self.step_fraction) * remaining), remaining - ts))

    def planned_cost(self, total: int) -> dict[str, int]:
        """Host-side count for one image of ``total`` features: forward+backward
        passes and forward passes (exact candidate evaluations) the method makes
        (with ``recall``: at most that many forward passes more per step)."""
        ts, te = self.stage_counts(total)
        fb = fwd = 0
        rem, block_end = total, False
        while rem > te:
            r = max(1, min(self.step_size(rem, total), rem - te))
            fb += 1
            fwd += min(rem, max(int(self.width), math.ceil(float(self.pool) * r)) + int(self.recall))
            block_end = r > 1
            rem -= r
        fwd += int(block_end) + te * (te + 1) // 2
        return {"forward_backward": fb, "forward": fwd}

    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        counts = problem.available_counts().tolist()
        head = run_screened_steps(
            problem,
            stop=[self.stage_counts(c)[1] for c in counts],
            width=int(self.width),
            pool=float(self.pool),
            recall=int(self.recall),
            step_size=self.step_size,
            batch_size=batch_size,
            progress=progress,
            channels_last=self.channels_last,
        )
        end = greedy_select(
            without_removed(problem, head),
            batch_size=batch_size,
            progress=progress,
            channels_last=self.channels_last,
            desc="fast end",
        )
        stats = {
            "channels_last": end.stats.get("channels_last"),
            "forward_backward_passes": head.stats["forward_backward_passes"],
            "evaluations": head.stats["evaluations"] + end.stats["evaluations"],
            "screened_evaluations": head.stats["evaluations"],
            "end_evaluations": end.stats["evaluations"],
        }
        return append_output(head, end, stats)


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[k : k + size] for k in range(0, len(items), size)]


def run_screened_steps(
    problem: Problem,
    *,
    stop: list[int],
    width: int,
    batch_size: int,
    progress: bool,
    step_size: StepSize | None = None,
    pool: float = 2.0,
    recall: int = 0,
    channels_last: bool | None = None,
    desc: str = "fast screened",
) -> MethodOutput:
    """Greedy steps whose candidates are screened by the mask gradient and scored exactly.

    Image ``i`` takes steps until ``stop[i]`` available features remain. Each
    step masks ``r = step_size(remaining, total)`` features (``None``: 1,
    clipped so as not to pass ``stop``): one forward+backward pass at the
    current state of every active image (``batch_size`` images per call) ranks
    the remaining features by gradient; the best ``max(width, ⌈pool·r⌉)`` of
    them (ties: lowest id) are each masked alone and scored by one forward pass
    (``batch_size`` candidates per call); the ``r`` candidates with the highest
    log-odds (ties: lowest feature id) are masked, best first. With ``recall``
    the ``recall`` remaining features with the best *earlier* exact scores that
    the gradient did not pick are scored too (a second screen, from the
    evaluations already made). A single step
    records the chosen candidate's log-odds (the new prefix's exact value); a
    block end is recorded by the next pass at that state (or a final forward).
    """
    images, fmap = problem.images, problem.features
    device, dtype = images.device, images.dtype
    n = images.shape[0]
    h, w = images.shape[2:]
    pmax = fmap.max_features
    counts = problem.available_counts().tolist()
    totals = list(counts)
    src, base = differentiable_copies(problem)
    col = torch.arange(pmax, device=device)
    masked = col.view(1, -1) >= fmap.num_features.view(-1, 1)  # (N, Pmax): 1 = masked (pads too)
    if problem.available is not None:
        masked |= ~problem.available
    x_cur = problem.start_images()  # (N, C, H, W)
    order = torch.full((n, pmax), -1, dtype=torch.int64, device=device)
    logodds = torch.full((n, pmax), float("nan"), dtype=torch.float32, device=device)
    evaluated = torch.zeros((n, pmax), dtype=torch.bool, device=device)
    bad = torch.zeros((), dtype=torch.bool, device=device)
    score_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    stale = torch.full((n, pmax), float("-inf"), dtype=score_dtype, device=device)  # last exact score
    removed = [0] * n
    need_state = [False] * n  # the current state is a block end not yet evaluated
    channels_last = default_channels_last(problem, channels_last)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    shared = fmap.shared.flatten() if fmap.shared is not None else None
    groups = fmap.groups.flatten(1) if shared is None else None
    n_fb = n_eval = 0

    def block(i: int) -> int:
        r = 1 if step_size is None else int(step_size(counts[i], totals[i]))
        return max(1, min(r, counts[i] - stop[i]))

    def record_states(rows: list[int], values: Tensor) -> None:
        """Record ``values`` ``(len(rows),)`` as the log-odds of each image's block end."""
        if rows:
            img = torch.tensor(rows, dtype=torch.int64).to(device, non_blocking=True)
            pos = torch.tensor([removed[i] - 1 for i in rows], dtype=torch.int64).to(device, non_blocking=True)
            logodds[img, pos] = values.float()
            evaluated[img, pos] = True

    active = [i for i in range(n) if counts[i] > stop[i]]
    total = sum(max(0, counts[i] - stop[i]) for i in range(n))
    bar = tqdm(total=total, unit="feature", unit_scale=True, disable=not progress, desc=desc, smoothing=0.05)
    try:
        while active:
            a_n = len(active)
            act = torch.tensor(active, dtype=torch.int64).to(device, non_blocking=True)
            # ---- screen: log-odds and mask gradient at every active state
            los, grads = [], []
            for part in _chunks(list(range(a_n)), batch_size):
                sub = act[part[0] : part[-1] + 1]
                idx = shared.expand(len(part), -1) if shared is not None else groups[sub]
                lo_s, g = mask_gradient(problem, src, base, sub, masked[sub], idx, channels_last)
                los.append(lo_s)
                grads.append(g)
            lo_state, grad = torch.cat(los), torch.cat(grads)  # (A,), (A, Pmax)
            bad |= ~torch.isfinite(grad).all() | ~torch.isfinite(lo_state).all()
            n_fb += a_n
            st = [k for k, i in enumerate(active) if need_state[i]]
            record_states([active[k] for k in st], lo_state[st])
            rs = [block(i) for i in active]
            ms = [min(counts[i], max(width, math.ceil(pool * r))) for i, r in zip(active, rs)]
            mmax, rmax = max(ms), max(rs)
            score = grad.masked_fill(masked[act], float("-inf"))
            top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :mmax]  # (A, mmax)
            m_t = torch.tensor(ms, device=device).view(-1, 1)
            valid = torch.arange(mmax, device=device).view(1, -1) < m_t
            cand = torch.where(valid, top, torch.full_like(top, pmax))
            if recall > 0:  # plus the best by their last exact score (earlier steps) not screened in now
                st = stale[act].masked_fill(masked[act], float("-inf"))
                pad = torch.full((a_n, 1), float("-inf"), dtype=st.dtype, device=device)
                st = torch.cat([st, pad], 1).scatter_(1, cand, float("-inf"))[:, :pmax]  # pads hit the extra column
                kk = min(recall, pmax)
                top2 = torch.sort(st, dim=1, descending=True, stable=True).indices[:, :kk]
                ok2 = st.gather(1, top2) > float("-inf")
                cand = torch.cat([cand, torch.where(ok2, top2, torch.full_like(top2, pmax))], 1)
                mmax = cand.shape[1]
            cand = cand.sort(dim=1).values  # ascending ids, pad last
            valid = cand < pmax
            # ---- exact scores of the screened candidates
            flat_rows, flat_cols = valid.nonzero(as_tuple=True)
            exact = torch.full((a_n, mmax), float("-inf"), dtype=score_dtype, device=device)
            b_total = int(flat_rows.numel())
            for start in range(0, b_total, batch_size):
                rr, cc = flat_rows[start : start + batch_size], flat_cols[start : start + batch_size]
                img = act[rr]
                pix = fmap.masks(img, cand[rr, cc]).unsqueeze(1)
                x = torch.where(pix, base, x_cur[img]).contiguous(memory_format=memory_format)
                with torch.inference_mode():
                    lo = target_logodds(problem.forward(x), problem.target[img])
                bad |= ~torch.isfinite(lo).all()
                exact[rr, cc] = lo.to(score_dtype)
            n_eval += b_total
            if recall > 0:
                stale[act.view(-1, 1).expand_as(cand)[valid], cand[valid]] = exact[valid]
            # ---- mask the r best of each image (best first; ties: lowest feature id)
            best = torch.sort(exact, dim=1, descending=True, stable=True).indices[:, :rmax]  # (A, rmax)
            chosen = cand.gather(1, best)
            values = exact.gather(1, best[:, :1]).squeeze(1)
            r_t = torch.tensor(rs, device=device).view(-1, 1)
            take = torch.arange(rmax, device=device).view(1, -1) < r_t  # (A, rmax)
            rows_k, js = take.nonzero(as_tuple=True)
            pos0 = torch.tensor([removed[i] for i in active], dtype=torch.int64).to(device, non_blocking=True)
            img_k = act[rows_k]
            order[img_k, pos0[rows_k] + js] = chosen[rows_k, js]
            single = [k for k, r in enumerate(rs) if r == 1]
            if single:
                sk = torch.tensor(single, dtype=torch.int64).to(device, non_blocking=True)
                logodds[act[sk], pos0[sk]] = values[sk].float()
                evaluated[act[sk], pos0[sk]] = True
            gone = torch.zeros((a_n, pmax + 1), dtype=torch.bool, device=device)
            gone.scatter_(1, torch.where(take, chosen, torch.full_like(chosen, pmax)), True)
            gone = gone[:, :pmax]
            masked[act] |= gone
            idx_all = shared.expand(a_n, -1) if shared is not None else groups[act]
            pix = gone.gather(1, idx_all).view(a_n, 1, h, w)
            x_cur[act] = torch.where(pix, base, x_cur[act])
            for i, r in zip(active, rs):
                removed[i] += r
                counts[i] -= r
                need_state[i] = r > 1
            bar.update(sum(rs))
            active = [i for i in active if counts[i] > stop[i]]
        # ---- block ends where an image stopped: one forward each
        last = [i for i in range(n) if need_state[i]]
        for part in _chunks(last, batch_size):
            img = torch.tensor(part, dtype=torch.int64).to(device, non_blocking=True)
            with torch.inference_mode():
                lo = target_logodds(
                    problem.forward(x_cur[img].contiguous(memory_format=memory_format)), problem.target[img]
                )
            record_states(part, lo)
            n_eval += len(part)
    finally:
        bar.close()
    if bool(bad):
        raise FloatingPointError("the model returned NaN or inf logits (or gradients) for some masked images")
    stats = {"channels_last": bool(channels_last), "forward_backward_passes": n_fb, "evaluations": n_eval}
    return MethodOutput(order, logodds, evaluated, torch.tensor(removed, dtype=torch.int64, device=device), stats)
