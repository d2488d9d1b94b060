"""Hand-made traces with known SIS sizes, and an independent Student-t quantile."""

from __future__ import annotations

import math
from typing import Sequence

import torch

from overinterp import BackselectTrace


def make_trace(
    values: Sequence[Sequence[float]],
    *,
    targets: Sequence[int],
    labels: Sequence[int] | None = None,
    image_shape: tuple[int, int, int] = (1, 2, 2),
    features: torch.Tensor | None = None,
    orders: Sequence[Sequence[int]] | None = None,
) -> BackselectTrace:
    """A trace whose image ``i`` keeps log-odds ``values[i][j]`` with ``order[j:]`` kept
    (``values[i][0]``: the full image). ``P = len(values[i])``; order defaults to 0..P−1."""
    n, p = len(values), len(values[0])
    v = torch.tensor(values, dtype=torch.float64)
    order = torch.tensor(orders, dtype=torch.int64) if orders is not None else torch.arange(p).repeat(n, 1)
    logodds = torch.cat([v[:, 1:], torch.full((n, 1), -20.0, dtype=torch.float64)], 1).float()
    return BackselectTrace(
        order_padded=order,
        logodds_padded=logodds,
        evaluated=torch.ones(n, p, dtype=torch.bool),
        num_features=torch.full((n,), p, dtype=torch.int64),
        target=torch.tensor(targets, dtype=torch.int64),
        full_logodds=v[:, 0].float(),
        method={"name": "exact"},
        image_shape=image_shape,
        baseline=torch.zeros(image_shape),
        features=features,
        labels=None if labels is None else torch.tensor(labels, dtype=torch.int64),
    )


def values_for_size(k: int, p: int, full: float = 8.0) -> list[float]:
    """Kept-prefix values whose SIS at any τ with logit(τ) in (−5, 5] has ``k`` features."""
    return [full] + [5.0 if j <= p - k else -5.0 for j in range(1, p)]


def t_quantile_numeric(q: float, df: float) -> float:
    """Student-t quantile by integrating the density (Simpson) and bisecting — independent of scipy."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float) -> float:
        m = 4000
        h = x / m
        xs = torch.linspace(0.0, x, m + 1, dtype=torch.float64)
        f = c * (1 + xs * xs / df) ** (-(df + 1) / 2)
        simpson = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
        return 0.5 + float(simpson)

    lo, hi = 0.0, 100.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < q else (lo, mid)
    return (lo + hi) / 2
