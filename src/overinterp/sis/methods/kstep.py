"""k-step backward selection: exact scores, ``k`` removals per step.

Each step evaluates every single removal of a still-present feature exactly (one
forward pass each, as :class:`~overinterp.sis.methods.Exact`) and then masks the
``k`` best at once (highest log-odds; ties to the lowest feature id), ordered
best first. ``KStep(1)`` is exact backward selection.

Evaluated prefixes: the first feature of each block (its single-removal score
is the log-odds of that prefix) and each block end (the engine evaluates the new
state as one extra candidate of the next step). FindSIS stops at these.

Cost: about ``P²/(2k)`` forward passes per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from overinterp.sis.methods._engine import Schedule, select
from overinterp.sis.methods.base import Method, MethodOutput, Problem, param
from overinterp.sis.methods.registry import register

__all__ = ["KStep"]


@register
@dataclass(frozen=True)
class KStep(Method):
    """Score every single removal exactly, then remove the ``k`` best at once.

    Args:
        k: features removed per step.
        channels_last: build candidates channels-last (``None``: as :class:`Exact`).
    """

    k: int = param(16, help="features removed per step", low=1)
    channels_last: bool | None = param(None, help="build candidates channels-last (None: automatic)", cli=False)

    name: ClassVar[str] = "kstep"
    summary: ClassVar[str] = "exact scores, --k removals per step (about P²/(2k) forward passes per image)"

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            raise ValueError(f"k must be a positive integer, got {self.k!r}")

    def schedule(self) -> Schedule:
        k = int(self.k)
        return Schedule(step=None if k == 1 else (lambda remaining, total: k), desc=f"kstep({k})")

    def planned_cost(self, total: int) -> dict[str, int]:
        """Forward passes for one image of ``total`` features: the remaining ones, scored each step,
        and the state after each block of more than one feature."""
        return self.schedule().planned_cost(total)

    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        problem.check_block_size(self.k, "KStep")
        return select(
            problem, self.schedule(), batch_size=batch_size, progress=progress, channels_last=self.channels_last
        )
