"""Adaptive backward selection: large steps while many features remain, exact
single steps for the last part.

While more than ``⌈tail·P⌉`` features remain, each step masks
``max(1, ⌊step_fraction · remaining⌋)`` features at once (never crossing into
the tail); the last ``⌈tail·P⌉`` features — where SIS at high τ and the 5%
kept subsets live — are removed by exact single steps from that state.

The head's blocks are chosen either like :class:`~overinterp.sis.methods.KStep`
(``head="kstep"``: every single removal scored exactly, the best ``r`` masked)
or like :class:`~overinterp.sis.methods.BatchedGradient` (``head="gradient"``: the
``r`` largest entries of the log-odds gradient w.r.t. the mask; one
forward+backward pass per block, needs a differentiable model).

``tail=1`` is exact backward selection. Cost with the defaults at ``P = 1024``:
about 30,000 forward passes per image (kstep head) instead of 524,800.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from overinterp.sis.methods._engine import Schedule, ceil_fraction, select
from overinterp.sis.methods.base import Method, MethodOutput, Problem, append_output, param, without_removed
from overinterp.sis.methods.registry import register

__all__ = ["Adaptive"]


@register
@dataclass(frozen=True)
class Adaptive(Method):
    """Geometric large steps, then an exact tail.

    Args:
        step_fraction: in the head each step masks this fraction of the
            features that remain (at least one).
        tail: fraction of each image's features removed by exact single steps
            at the end (``1.0``: exact throughout).
        head: ``"kstep"`` (exact scores, forward passes only) or ``"gradient"``.
        channels_last: build inputs channels-last (``None``: as :class:`Exact`).
    """

    step_fraction: float = param(0.05, help="head step = this × remaining", low=0.0, high=1.0, low_open=True)
    tail: float = param(0.15, help="fraction removed by exact single steps", low=0.0, high=1.0)
    head: str = param("kstep", help="how head blocks are chosen", choices=("kstep", "gradient"))
    channels_last: bool | None = param(None, help="build inputs channels-last (None: automatic)", cli=False)

    name: ClassVar[str] = "adaptive"
    summary: ClassVar[str] = "large steps, then an exact --tail"
    faithfulness: ClassVar[str] = "close to exact, forward passes only (bench/results/frontier.md)"
    ladder: ClassVar = (2, {})

    @property
    def needs_gradients(self) -> bool:  # type: ignore[override]
        return self.head == "gradient"

    def __post_init__(self) -> None:
        if not (0.0 < float(self.step_fraction) <= 1.0):
            raise ValueError(f"step_fraction must lie in (0, 1], got {self.step_fraction!r}")
        if not (0.0 <= float(self.tail) <= 1.0):
            raise ValueError(f"tail must lie in [0, 1], got {self.tail!r}")
        if self.head not in ("kstep", "gradient"):
            raise ValueError(f"head must be 'kstep' or 'gradient', got {self.head!r}")

    def tail_count(self, total: int) -> int:
        """Features removed by exact single steps out of ``total``."""
        return ceil_fraction(float(self.tail), total)

    def step_size(self, remaining: int, total: int) -> int:
        t = self.tail_count(total)
        if remaining <= t:
            return 1
        return min(max(1, int(float(self.step_fraction) * remaining)), remaining - t)

    def head_schedule(self) -> Schedule:
        """The head's steps (the exact tail is :class:`Exact`'s schedule on what is left)."""
        if self.head == "kstep":
            return Schedule(step=self.step_size, desc="adaptive")
        return Schedule(screen="gradient", step=self.step_size, stop_at=self.tail_count, desc="adaptive head")

    def planned_cost(self, total: int) -> dict[str, int]:
        """Forward(+backward) passes for one image of ``total`` features (head as configured, exact tail)."""
        cost = self.head_schedule().planned_cost(total)
        if self.head == "gradient":
            cost["forward"] += Schedule().planned_cost(self.tail_count(total))["forward"]
        return cost

    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        cl = self.channels_last
        head = select(problem, self.head_schedule(), batch_size=batch_size, progress=progress, channels_last=cl)
        if self.head == "kstep":
            return head
        tail = select(
            without_removed(problem, head),
            Schedule(desc="adaptive tail"),
            batch_size=batch_size,
            progress=progress,
            channels_last=cl,
        )
        stats = {
            "channels_last": tail.stats.get("channels_last"),
            "forward_backward_passes": head.stats["forward_backward_passes"],
            "zero_gradient_passes": head.stats["zero_gradient_passes"],
            "evaluations": tail.stats["evaluations"],
        }
        return append_output(head, tail, stats)
