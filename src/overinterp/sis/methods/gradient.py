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
only records the all-masked value), batched ``batch_size`` images at a time by
the one engine (:mod:`overinterp.sis.methods._engine`, ``screen="gradient"``
with no exact scoring): an image that finishes is replaced by the next, so
batches stay full with ragged feature counts; the host only does integer
bookkeeping and never reads a gradient back, so nothing synchronises per
iteration.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from overinterp.sis.methods._engine import Schedule, differentiable_copies, mask_gradient, select
from overinterp.sis.methods.base import Method, MethodOutput, Problem, param
from overinterp.sis.methods.registry import register

__all__ = ["BatchedGradient", "mask_gradient", "differentiable_copies"]


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

    def schedule(self) -> Schedule:
        k = int(self.k)
        return Schedule(
            screen="gradient",
            step=lambda remaining, total: k,
            noise=float(self.noise),
            seed=int(self.seed),
            desc="gradient",
        )

    def planned_cost(self, total: int) -> dict[str, int]:
        """Forward+backward passes for one image of ``total`` features: one per block, one to close."""
        return self.schedule().planned_cost(total)

    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        problem.check_block_size(self.k, "BatchedGradient")
        return select(
            problem, self.schedule(), batch_size=batch_size, progress=progress, channels_last=self.channels_last
        )
