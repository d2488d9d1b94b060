"""SIS at a threshold relative to each image's own confidence: ``τ_i = r · f(x_i)``.

Quantised or poorly calibrated models (the TFLite MobileNets give 0.4–0.8 on
ordinary photos) rarely reach a fixed ``τ = 0.9``; asking for the smallest
subset that keeps, say, 90% of the image's own confidence works on every image.
``f(x_i)`` is the target's probability on the full image as the engine sees it:
``sigmoid(full_logodds)`` (for a :class:`~overinterp.BlackBoxClassifier` with
probabilities, ``p_t / Σ_j p_j``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from overinterp.sis.trace import BackselectTrace, SISResult

__all__ = ["relative_thresholds", "find_sis_relative", "RelativeSISResult"]


@dataclass
class RelativeSISResult(SISResult):
    """:class:`SISResult` with a per-image threshold: ``thresholds`` ``(N,)`` float64
    ``= ratio · f(x_i)``; ``threshold`` holds the ratio."""

    thresholds: Tensor = dataclasses.field(default_factory=lambda: torch.zeros(0))
    ratio: float = 1.0


def relative_thresholds(trace: BackselectTrace, ratio: float) -> Tensor:
    """``(N,)`` float64 thresholds ``ratio · f(x_i)`` of the images of ``trace``."""
    r = float(ratio)
    if not (0.0 < r <= 1.0):
        raise ValueError(f"ratio must lie in (0, 1] (a fraction of the image's own confidence), got {ratio!r}")
    return r * torch.sigmoid(trace.full_logodds.double())


def find_sis_relative(
    trace: BackselectTrace,
    ratio: float,
    model: Any = None,
    images: Tensor | None = None,
    *,
    batch_size: int = 256,
) -> RelativeSISResult:
    """FindSIS with ``τ_i = ratio · f(x_i)`` per image, re-verified when ``model`` and
    ``images`` are given (as :meth:`BackselectTrace.find_sis`).

    Every image has an SIS (``f(x_i) ≥ τ_i`` always holds) unless re-verification
    finds even the full image short of ``τ_i``.
    """
    taus = relative_thresholds(trace, ratio)
    if (model is None) != (images is None):
        raise ValueError("verification needs both model and images")
    if images is not None and images.dim() == 3:
        images = images.unsqueeze(0)
    sis: list[Tensor | None] = []
    logodds = torch.full((len(trace),), float("nan"), dtype=torch.float64)
    extended = 0
    for i in range(len(trace)):
        tau = float(taus[i])
        # a float64 τ just under f(x) may round above it in log-odds: never ask more than f(x)
        tau = min(tau, float(torch.sigmoid(trace.full_logodds[i].double())))
        sub = trace.select([i])
        res = sub.find_sis(tau) if model is None else sub.find_sis(tau, model, images[i : i + 1], batch_size=batch_size)
        sis.append(res[0])
        logodds[i] = res.logodds[0]
        extended += res.extended
    return RelativeSISResult(
        sis, float(ratio), logodds, verified=model is not None, extended=extended, thresholds=taus, ratio=float(ratio)
    )
