"""Confidence intervals that respect the range of their quantity.

* proportions (accuracies, "fraction of images with a SIS"): :func:`wilson_ci`, Wilson's score
  interval, always inside ``[0, 1]``;
* bounded means (SIS size as a fraction of the image, confidence, confidence drop):
  :func:`bounded_mean_ci`, a percentile bootstrap of the mean with a fixed seed (deterministic),
  whose ends are means of resampled values and so lie inside ``[min(x), max(x)]``, inside the
  quantity's range; with fewer than :data:`MIN_VALUES` values there is no interval and
  :func:`format_ci` says "too few images (n = 3)";
* unbounded means and differences: Student's t (:func:`mean_ci`) and Welch (:func:`welch_diff_ci`),
  from ``scipy.stats``'s quantiles. With fewer than two values in a group they are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "MeanCI",
    "DiffCI",
    "ProportionCI",
    "MIN_VALUES",
    "t_quantile",
    "mean_ci",
    "welch_diff_ci",
    "wilson_ci",
    "bounded_mean_ci",
    "format_ci",
    "too_few",
    "CI_METHOD_MEAN",
    "CI_METHOD_DIFF",
    "CI_METHOD_BOUNDED",
    "CI_METHOD_PROPORTION",
]

#: fewest values a bounded mean gets an interval for (fewer: "too few images (n = 3)")
MIN_VALUES = 5
#: bootstrap resamples of :func:`bounded_mean_ci` (fixed seed: the same interval on every run)
BOOTSTRAP_RESAMPLES = 4000

#: How the intervals are computed, for figure captions.
CI_METHOD_MEAN = "Student's t interval of the mean"
CI_METHOD_BOUNDED = f"percentile bootstrap of the mean (inside the quantity's range; none for n < {MIN_VALUES})"
CI_METHOD_PROPORTION = "Wilson score interval"
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


@dataclass(frozen=True)
class ProportionCI:
    """``k`` of ``n`` with Wilson's two-sided ``level`` interval ``[low, high]`` (inside ``[0, 1]``;
    NaN when ``n == 0``)."""

    k: int
    n: int
    low: float
    high: float
    level: float

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else float("nan")


def wilson_ci(k: int, n: int, level: float = 0.95) -> ProportionCI:
    """Wilson's score interval of the proportion ``k / n``:
    ``(p + z²/2n ± z·√(p(1−p)/n + z²/4n²)) / (1 + z²/n)``, clipped to ``[0, 1]`` against rounding."""
    from scipy.stats import norm

    k, n = int(k), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return ProportionCI(0, 0, float("nan"), float("nan"), level)
    z = float(norm.ppf(0.5 + level / 2))
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return ProportionCI(k, n, low, high, level)


def bounded_mean_ci(
    x: Tensor | Sequence[float],
    level: float = 0.95,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
    min_values: int = MIN_VALUES,
) -> MeanCI:
    """Mean of ``x`` (NaNs dropped) with a percentile-bootstrap ``level`` interval.

    The interval's ends are means of resamples of ``x``, so they lie in ``[min(x), max(x)]``:
    a mean of values in ``[0, 1]`` gets an interval in ``[0, 1]``. Fewer than ``min_values``
    values: NaN ends (:func:`format_ci` says "too few images"). Deterministic (``seed``).
    """
    v = _values(x)
    n = int(v.numel())
    nan = float("nan")
    if n == 0:
        return MeanCI(nan, nan, nan, 0, nan, level)
    mean = float(v.mean())
    std = float(v.std(unbiased=True)) if n > 1 else nan
    if n < min_values:
        return MeanCI(mean, nan, nan, n, std, level)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, n, (resamples, n), generator=g)
    means = v[idx].mean(1)
    q = torch.tensor([0.5 - level / 2, 0.5 + level / 2], dtype=torch.float64)
    low, high = torch.quantile(means, q).tolist()
    lo, hi = float(v.min()), float(v.max())
    return MeanCI(mean, min(max(low, lo), mean), max(min(high, hi), mean), n, std, level)


def too_few(n: int) -> str:
    """The words a cell shows instead of an interval."""
    return f"too few images (n = {n})"


def format_ci(ci: MeanCI | ProportionCI, *, percent: bool = True, digits: int = 1) -> str:
    """``"12.3% [10.1, 14.6] (n = 40)"``; ``"too few images (n = 3)"`` for a mean of fewer than
    :data:`MIN_VALUES` values (a proportion always shows its Wilson interval: it is exact enough
    for any ``n``); ``"no images"`` for ``n = 0``."""
    n = ci.n
    if n == 0:
        return "no images"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    value = ci.value if isinstance(ci, ProportionCI) else ci.mean
    if isinstance(ci, MeanCI) and (n < MIN_VALUES or math.isnan(ci.low)):
        return f"{scale * value:.{digits}f}{unit}, {too_few(n)}"
    extra = f"{ci.k}/{n}" if isinstance(ci, ProportionCI) else f"n = {n}"
    return f"{scale * value:.{digits}f}{unit} [{scale * ci.low:.{digits}f}, {scale * ci.high:.{digits}f}] ({extra})"
