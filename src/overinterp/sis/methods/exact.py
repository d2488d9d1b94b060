"""Exact backward selection (BackSelect of Carter et al. 2019).

Each step evaluates every single removal of a still-present feature and masks
the one that keeps the target most likely (highest log-odds; ties go to the
lowest feature id). Cost: ``P(P+1)/2`` forward passes per image.

How it is fast: candidates of *all* images are streamed through one queue, so
every forward call is full (``batch_size`` candidates) until the very last one,
however few features an image has left; candidates are built on the device by
one gather and one ``where`` per batch; the host only does integer bookkeeping
(it never reads a score back), so there is no device round-trip per step. The
machinery is the one engine, :mod:`overinterp.sis.methods._engine`; this method
is its simplest schedule.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from overinterp.sis.methods._engine import AUTOCAST_DTYPES, Schedule, select
from overinterp.sis.methods.base import Method, MethodOutput, Problem, param
from overinterp.sis.methods.registry import register

__all__ = ["Exact"]

_AUTOCAST = AUTOCAST_DTYPES


@register
@dataclass(frozen=True)
class Exact(Method):
    """Exact greedy backward selection.

    Args:
        rank_by: ``"logodds"`` (default, the project's contract) or
            ``"probability"`` (the original pipeline's ranking by softmax ``p``,
            kept for comparison; it ties once ``p`` rounds to 1).
        channels_last: build candidates in channels-last memory layout. ``None``
            (default): on for float32/16 models that contain a 2-D convolution
            (bench/backselect.py measured it faster for CIFAR ResNets on CPU),
            off for float64. The choice made is recorded in ``trace.meta``.
        autocast: ``None`` (default, full precision) or ``"bfloat16"`` /
            ``"float16"``: run the forward under ``torch.autocast``; scores are
            then approximate.
    """

    rank_by: Literal["logodds", "probability"] = param("logodds", help="what exact steps rank by")
    channels_last: bool | None = param(None, help="build candidates channels-last (None: automatic)", cli=False)
    autocast: str | None = param(
        None, help="run the forward under torch.autocast of this dtype", choices=tuple(_AUTOCAST), cli=False
    )

    name: ClassVar[str] = "exact"
    summary: ClassVar[str] = (
        "the reference: every single removal scored at every step (P(P+1)/2 forward passes per image)"
    )
    faithfulness: ClassVar[str] = "the reference (bench/results/frontier.md measures every other method against it)"
    ladder: ClassVar = (0, {})

    def __post_init__(self) -> None:
        if self.rank_by not in ("logodds", "probability"):
            raise ValueError(f"rank_by must be 'logodds' or 'probability', got {self.rank_by!r}")
        if self.autocast is not None and self.autocast not in _AUTOCAST:
            raise ValueError(f"autocast must be None or one of {sorted(_AUTOCAST)}, got {self.autocast!r}")

    def schedule(self) -> Schedule:
        """One feature per step, every remaining one scored exactly."""
        return Schedule(
            rank_by=self.rank_by, autocast=None if self.autocast is None else _AUTOCAST[self.autocast], desc="exact"
        )

    def planned_cost(self, total: int) -> dict[str, int]:
        """Forward passes for one image of ``total`` features: every remaining one scored at every step."""
        return self.schedule().planned_cost(total)

    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        return select(
            problem, self.schedule(), batch_size=batch_size, progress=progress, channels_last=self.channels_last
        )


def run_exact(problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
    """Exact backward selection of ``problem`` with the defaults of :class:`Exact`."""
    return Exact().run(problem, batch_size=batch_size, progress=progress)
