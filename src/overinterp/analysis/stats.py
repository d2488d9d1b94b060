"""Confidence intervals for means and differences of means (Student's t, Welch).

Intervals use the t distribution's quantiles from ``scipy.stats`` (an exact,
deterministic method; a bootstrap would add resampling noise and a seed to
every figure). With fewer than two values in a group the interval is
undefined and returned as NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["MeanCI", "DiffCI", "t_quantile", "mean_ci", "welch_diff_ci", "CI_METHOD_MEAN", "CI_METHOD_DIFF"]

#: How the intervals are computed, for figure captions.
CI_METHOD_MEAN = "Student's t interval of the mean"
CI_METHOD_DIFF = "Welch's t interval of the difference in means"


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile of Student's t with ``df`` (possibly fractional) degrees of freedom."""
    from scipy.stats import t

    if not (df > 0) or not math.isfinite(df):
        return float("nan")
    return float(t.ppf(q, df))


def _values(x: Tensor | Sequence[float]) -> Tensor:
    v = torch.as_tensor(x, dtype=torch.float64).flatten()
    return v[~torch.isnan(v)]


@dataclass(frozen=True)
class MeanCI:
    """Mean of ``n`` values with a two-sided ``level`` interval ``[low, high]`` (NaN if ``n < 2``)."""

    mean: float
    low: float
    high: float
    n: int
    std: float
    level: float


@dataclass(frozen=True)
class DiffCI:
    """``mean_a − mean_b`` with Welch's two-sided ``level`` interval.

    ``df``: Welch–Satterthwaite degrees of freedom; ``se``: standard error of the difference.
    """

    diff: float
    low: float
    high: float
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    se: float
    df: float
    level: float


def mean_ci(x: Tensor | Sequence[float], level: float = 0.95) -> MeanCI:
    """Mean of ``x`` (``(n,)``, NaNs dropped) and its t interval: ``mean ± t_{(1+level)/2, n−1}·s/√n``."""
    v = _values(x)
    n = int(v.numel())
    if n == 0:
        nan = float("nan")
        return MeanCI(nan, nan, nan, 0, nan, level)
    mean = float(v.mean())
    if n < 2:
        return MeanCI(mean, float("nan"), float("nan"), n, float("nan"), level)
    std = float(v.std(unbiased=True))
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return MeanCI(mean, mean - half, mean + half, n, std, level)


def welch_diff_ci(a: Tensor | Sequence[float], b: Tensor | Sequence[float], level: float = 0.95) -> DiffCI:
    """``mean(a) − mean(b)`` (NaNs dropped) with Welch's t interval.

    ``se = √(s_a²/n_a + s_b²/n_b)``, ``df = se⁴ / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1))``,
    interval ``diff ± t_{(1+level)/2, df}·se``. When both groups have zero variance the
    interval collapses to the difference. NaN bounds when a group has fewer than two values.
    """
    va, vb = _values(a), _values(b)
    na, nb = int(va.numel()), int(vb.numel())
    nan = float("nan")
    ma = float(va.mean()) if na else nan
    mb = float(vb.mean()) if nb else nan
    diff = ma - mb
    if na < 2 or nb < 2:
        return DiffCI(diff, nan, nan, ma, mb, na, nb, nan, nan, level)
    qa = float(va.var(unbiased=True)) / na
    qb = float(vb.var(unbiased=True)) / nb
    se = math.sqrt(qa + qb)
    if se == 0.0:
        return DiffCI(diff, diff, diff, ma, mb, na, nb, 0.0, float(na + nb - 2), level)
    df = (qa + qb) ** 2 / (qa**2 / (na - 1) + qb**2 / (nb - 1))
    half = t_quantile(0.5 + level / 2, df) * se
    return DiffCI(diff, diff - half, diff + half, ma, mb, na, nb, se, df, level)
