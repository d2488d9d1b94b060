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
   ``r = max(1, min(⌊step_fraction·remaining⌋, max(first_block, ⌊growth·removed⌋)))``
   (``removed``: features masked so far; so the first blocks are small and grow as
   features go, up to a fraction of those left): one forward+backward pass ranks
   the remaining features by the gradient of the target log-odds w.r.t. the mask,
   the best ``max(width, ⌈pool·r⌉)`` are each scored *exactly* (one forward pass
   each) and the ``r`` with the highest exact scores are masked. Exact selection's
   first removals raise the log-odds steeply (it removes the evidence against the
   class first); a first block of 5% of the features at once cannot follow it, and
   the gap it opens is not closed later (``bench/results/frontier-split.md``, round 2);
2. **screened single steps** — from ``T_s`` down to ``T_e``: the same with
   ``r = 1`` (``width`` candidates scored exactly, the best masked; ties: lowest
   feature id). The step equals exact's whenever exact's choice is among them;
3. **exact end** — the last ``T_e`` features: exact single steps.

Every single step's log-odds is the exact value of the prefix it leaves, so
FindSIS and its re-verification see exact numbers there; head block ends are
evaluated too. ``Fast(screened=1, exact=1, exact_cap=P)`` is exact backward
selection; ``width ≥ P`` makes the screened steps exact as well.

Cost per image: one forward+backward pass per head block and per screened step
(about ``first_block/growth`` blocks of ``first_block``, then ``ln(step_fraction·P/first_block)/ln(1+growth)``
growing ones, ``ln(P/T_s)/step_fraction`` of a fraction of what remains, and ``T_s − T_e`` single steps: 106
at P = 1,024), ``Σ min(R, max(width, ⌈pool·r⌉))``
forward passes over the head's blocks and ``width`` per screened step, and
``T_e(T_e+1)/2`` at the end (a constant once the cap binds): linear in ``P``.
:meth:`Fast.planned_cost` counts it exactly; ``bench/frontier.py --scaling``
measures it at P = 256, 1,024 and 4,096.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Callable, ClassVar

from torch import Tensor

from overinterp.sis.methods._engine import Schedule, ceil_fraction, select
from overinterp.sis.methods.base import Method, MethodOutput, Problem, append_output, param, without_removed
from overinterp.sis.methods.registry import register

__all__ = ["Fast", "AdaptiveScreen"]


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
        step_fraction: each head block masks at most this fraction of the features
            that remain (at least one).
        growth: head blocks also mask at most ``max(first_block, ⌊growth·removed⌋)``
            features, ``removed`` being the features masked so far: small first blocks
            that grow geometrically (``0``: off, blocks of ``step_fraction`` from the start,
            the default before 0.5).
        first_block: the size of the head's first blocks with ``growth`` (``≥ 1``).
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
        extend: per-image adaptation (issue 24): after a single step whose exact best came
            from the last quarter of its gradient screen (or from ``recall``), the image's
            next single step screens twice as many candidates, up to ``2**extend`` times
            ``width``; after a step whose best came from higher up, the width halves back
            (``0``: off). Head blocks keep ``max(width, ⌈pool·r⌉)``.
        extend_budget: with ``extend``, each image spends at most ``extend_budget`` times
            its planned forward passes without adaptation: a wider screen is taken only
            while the rest of the image's plan still fits (linear in ``P``).
        channels_last: build inputs channels-last (``None``: as :class:`Exact`).
    """

    step_fraction: float = param(0.05, help="head step = at most this × remaining", low=0.0, high=1.0, low_open=True)
    growth: float = param(
        0.1, help="head step = at most max(first block, this × removed so far) (0: off)", low=0.0, absent=0.0
    )
    first_block: int = param(4, help="with growth: size of the head's first blocks", low=1)
    pool: float = param(2.0, help="candidates scored exactly per head block, × the block size", low=1.0)
    screened: float = param(
        0.06, help="fraction of the features (the last removed) taken by single steps", low=0.0, high=1.0
    )
    exact: float = param(
        0.05,
        help="fraction of the features (the very last) taken by exact steps",
        low=0.0,
        high=1.0,
        flag="--exact-end",
    )
    width: int = param(32, help="gradient-screened candidates scored exactly per single step", low=1)
    recall: int = param(0, help="per step also score the best earlier-scored features the gradient missed", low=0)
    exact_cap: int = param(40, help="at most this many exact end steps", low=0)
    extend: int = param(
        0, help="per-image adaptation: screen doublings after steps whose best came from the screen's bottom", low=0
    )
    extend_budget: float = param(
        1.15, help="with extend: per-image cap on forward passes, x the planned ones without adaptation", low=1.0
    )
    channels_last: bool | None = param(None, help="build inputs channels-last (None: automatic)", cli=False)

    name: ClassVar[str] = "fast"
    summary: ClassVar[str] = (
        "recommended when exact does not fit the budget: about 1% of exact's cost per pixel at 32×32, gradient-"
        "screened exactly scored steps, exact end"
    )
    needs_gradients: ClassVar[bool] = True
    faithfulness: ClassVar[str] = (
        "near exact at about 1% of its cost (32×32): on 9 models (5 held out from its tuning) own-5%-subset "
        "accuracy as exact's, mean confidence -0.020 to +0.031 from exact's, SIS sizes 0.94-1.27× exact's "
        "(bench/results/frontier-round2.md); measure yours beside exact with check_method"
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
        g = self.growth
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not (0.0 <= float(g) < math.inf):
            raise ValueError(
                "Fast: growth (head blocks at most this × the features removed so far) must be a number >= 0, "
                f"got {g!r}"
            )
        fb = self.first_block
        if isinstance(fb, bool) or not isinstance(fb, int) or fb < 1:
            raise ValueError(f"Fast: first_block (the head's first block size) must be an integer >= 1, got {fb!r}")
        if isinstance(self.recall, bool) or not isinstance(self.recall, int) or self.recall < 0:
            raise ValueError(f"Fast: recall must be an integer >= 0, got {self.recall!r}")
        if isinstance(self.exact_cap, bool) or not isinstance(self.exact_cap, int) or self.exact_cap < 0:
            raise ValueError(f"Fast: exact_cap must be an integer >= 0, got {self.exact_cap!r}")
        if isinstance(self.extend, bool) or not isinstance(self.extend, int) or self.extend < 0:
            raise ValueError(f"Fast: extend (screen doublings) must be an integer >= 0, got {self.extend!r}")
        b = self.extend_budget
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not (1.0 <= float(b) < math.inf):
            raise ValueError(
                f"Fast: extend_budget (per-image cap on forward passes, × the planned ones) must be a number >= 1, "
                f"got {b!r}"
            )
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
        ``max(1, min(⌊step_fraction·remaining⌋, max(first_block, ⌊growth·(total − remaining)⌋)))``
        (so single steps already once fewer than ``1/step_fraction`` remain) down to
        ``⌈screened·P⌉``, single steps after."""
        ts = self.stage_counts(total)[0]
        if remaining <= ts:
            return 1
        r = int(float(self.step_fraction) * remaining)
        if self.growth:
            r = min(r, max(int(self.first_block), int(float(self.growth) * (total - remaining))))
        return max(1, min(r, remaining - ts))

    def head_schedule(self) -> Schedule:
        """Head blocks and screened single steps, down to the exact end's ``T_e`` features
        (with ``extend``: a new :class:`AdaptiveScreen`, whose per-image state lives for one run)."""
        width, pool = int(self.width), float(self.pool)
        kw = dict(
            screen="gradient",
            step=self.step_size,
            stop_at=lambda total: self.stage_counts(total)[1],
            width=lambda remaining, total, r: max(width, math.ceil(pool * r)),
            recall=int(self.recall),
            desc="fast screened",
        )
        if not self.extend:
            return Schedule(**kw)
        return AdaptiveScreen(**kw, extend=int(self.extend), budget=float(self.extend_budget), base=self._base_plan)

    def _base_plan(self, total: int) -> list[int]:
        """``cost[R]``: planned forward passes without adaptation from ``R`` remaining features
        (of ``total``) to the end of the exact end, at every ``R`` a step starts from and at ``T_e``."""
        ts, te = self.stage_counts(total)
        width, pool, recall = int(self.width), float(self.pool), int(self.recall)
        states, rem = [], total
        while rem > te:
            r = max(1, min(self.step_size(rem, total), rem - te))
            states.append((rem, r))
            rem -= r
        cost = [0] * (total + 1)
        acc = Schedule().planned_cost(te)["forward"] + int(bool(states) and states[-1][1] > 1)
        cost[te] = acc
        for rem, r in reversed(states):
            acc += min(rem, max(width, math.ceil(pool * r)) + recall)
            cost[rem] = acc
        return cost

    def planned_cost(self, total: int) -> dict[str, int]:
        """Host-side count for one image of ``total`` features: forward+backward
        passes and forward passes (exact candidate evaluations) the method makes
        (with ``recall``: at most that many forward passes more per step; with
        ``extend``: at most ``⌊extend_budget ×⌋`` that many)."""
        base = replace(self, extend=0).head_schedule().planned_cost(total)
        base["forward"] += Schedule().planned_cost(self.stage_counts(total)[1])["forward"]
        if self.extend:
            base["forward"] = math.floor(float(self.extend_budget) * base["forward"])
        return base

    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        cl = self.channels_last
        head = select(problem, self.head_schedule(), batch_size=batch_size, progress=progress, channels_last=cl)
        end = select(
            without_removed(problem, head),
            Schedule(desc="fast end"),
            batch_size=batch_size,
            progress=progress,
            channels_last=cl,
        )
        stats = {
            "channels_last": end.stats.get("channels_last"),
            "forward_backward_passes": head.stats["forward_backward_passes"],
            "evaluations": head.stats["evaluations"] + end.stats["evaluations"],
            "screened_evaluations": head.stats["evaluations"],
            "end_evaluations": end.stats["evaluations"],
            "screening": head.stats["screening"],
        }
        return append_output(head, end, stats)


@dataclass
class AdaptiveScreen(Schedule):
    """Fast's gradient screen with a per-image width (:attr:`Fast.extend`).

    Each image keeps a doubling level ``k ∈ [0, extend]``: its single steps score the
    gradient's best ``width · 2**k`` candidates (head blocks: the plain width). After a
    single step, :meth:`observe` raises ``k`` by one when the step's exact best sat in the
    last quarter of the screen (rank ``≥ L − ⌊L/4⌋``, recall included) and lowers it by one
    otherwise. A wider screen is used only while the image's forward passes so far, this
    step's and the rest of its unadapted plan (``base(total)[R − 1]``) fit in
    ``⌊budget · base(total)[total]⌋``; otherwise the widest that fits (at least the plain one).
    """

    extend: int = 0
    budget: float = 1.0
    base: Callable[[int], list[int]] | None = None
    level: dict[int, int] = field(default_factory=dict)
    spent: dict[int, int] = field(default_factory=dict)
    last_r: dict[int, int] = field(default_factory=dict)
    plans: dict[int, list[int]] = field(default_factory=dict)

    def _plan(self, total: int) -> list[int]:
        if total not in self.plans:
            self.plans[total] = self.base(total) if self.base is not None else [0] * (total + 1)
        return self.plans[total]

    def exact_count(self, image: int | None, remaining: int, total: int, r: int) -> int:
        plain = super().exact_count(image, remaining, total, r)
        if image is None:  # dry run / buffer size: the widest screen a step may take
            return min(remaining, plain * 2**self.extend) if r == 1 else plain
        self.last_r[image] = r
        w = plain
        if r == 1:
            plan = self._plan(total)
            cap = math.floor(self.budget * plan[total])
            after = plan[remaining - 1] if remaining - 1 < len(plan) else 0
            for k in range(self.level.get(image, 0), 0, -1):
                wide = min(remaining, plain * 2**k)
                if self.spent.get(image, 0) + min(remaining, wide + self.recall) + after <= cap:
                    w = wide
                    break
        self.spent[image] = self.spent.get(image, 0) + min(remaining, w + self.recall)
        return w

    def observe(self, images: Tensor, rank: Tensor, width: Tensor) -> None:
        for i, rk, wd in zip(images.tolist(), rank.tolist(), width.tolist()):
            if self.last_r.get(i) != 1:
                continue
            k = self.level.get(i, 0)
            self.level[i] = min(self.extend, k + 1) if rk >= wd - wd // 4 else max(0, k - 1)
