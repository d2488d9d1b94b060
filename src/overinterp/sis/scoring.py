"""Scores of the target class: log-odds (the ranking contract) and probability.

Backward selection ranks candidates by the target's log-odds
``z_t − logsumexp_{j≠t} z_j``, which equals ``log p_t − log(1 − p_t)`` and is
monotone in ``p_t``; unlike ``p_t`` or ``log_softmax`` it does not saturate in
float32 once the logit margin exceeds about 17.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["target_logodds", "target_probability", "logit", "check_threshold", "check_logits"]


def _as_float(logits: Tensor) -> Tensor:
    return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()


def target_logodds(logits: Tensor, target: Tensor) -> Tensor:
    """``(B, K)`` logits, ``(B,)`` targets → ``(B,)`` log-odds of the target."""
    z = _as_float(logits)
    t = target.view(-1, 1)
    zt = z.gather(1, t).squeeze(1)
    others = z.scatter(1, t, float("-inf"))
    return zt - torch.logsumexp(others, dim=1)


def target_probability(logits: Tensor, target: Tensor) -> Tensor:
    """``(B, K)`` logits, ``(B,)`` targets → ``(B,)`` softmax probability of the target."""
    return torch.softmax(_as_float(logits), dim=1).gather(1, target.view(-1, 1)).squeeze(1)


def check_threshold(threshold: float) -> float:
    """Validate a confidence threshold τ ∈ [0, 1]."""
    try:
        tau = float(threshold)
    except (TypeError, ValueError):
        raise TypeError(f"threshold must be a number in [0, 1], got {threshold!r}") from None
    if not (0.0 <= tau <= 1.0):  # also rejects NaN
        raise ValueError(f"threshold must lie in [0, 1], got {threshold!r}")
    return tau


def logit(p: float) -> float:
    """Log-odds of a probability, in float64: ``log p − log(1 − p)`` (±inf at 0 and 1)."""
    p = check_threshold(p)
    if p == 0.0:
        return float("-inf")
    if p == 1.0:
        return float("inf")
    return math.log(p) - math.log1p(-p)


def check_logits(out: object, n: int) -> Tensor:
    """Check a model's output is an ``(n, K)`` floating tensor of finite logits, ``K ≥ 2``."""
    if not isinstance(out, Tensor):
        raise TypeError(f"the model must return a tensor of logits (N, classes); it returned {type(out).__name__}")
    if out.dim() != 2 or out.shape[0] != n or out.shape[1] < 2:
        raise ValueError(
            f"the model must return logits of shape (N, classes) with N = {n} and at least 2 "
            f"classes; it returned shape {tuple(out.shape)}"
        )
    if not out.is_floating_point():
        raise TypeError(f"the model must return floating-point logits, got {out.dtype}")
    if not torch.isfinite(out).all():
        raise ValueError("the model returned NaN or inf logits for the input images")
    return out
