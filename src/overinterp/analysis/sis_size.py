"""SIS size against the confidence threshold τ, from a stored trace (paper Figure 6).

Every number here comes from the trace alone (:meth:`BackselectTrace.find_sis`
without a model): any threshold, any time, no backward selection rerun. An
image counts at τ only when its full-image confidence ``f(x) ≥ τ`` (otherwise
it has no SIS). Sizes are fractions of the image's pixels, so pixel and
patch/superpixel features compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from overinterp.analysis.stats import CI_METHOD_BOUNDED, MIN_VALUES, bounded_mean_ci
from overinterp.analysis.style import pyplot, series_style
from overinterp.sis.trace import BackselectTrace

__all__ = [
    "DEFAULT_THRESHOLDS",
    "full_confidence",
    "trace_accuracy",
    "feature_pixel_counts",
    "sis_fractions",
    "sis_fraction_matrix",
    "SizeCurve",
    "sis_size_curve",
    "plot_sis_size_curves",
]

#: Thresholds of the sweeps (Figures 5, 6, S3).
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99)


def full_confidence(trace: BackselectTrace) -> Tensor:
    """``(N,)`` float64: the model's probability of its predicted class on the full image."""
    return torch.sigmoid(trace.full_logodds.double())


def trace_accuracy(trace: BackselectTrace, labels: Tensor | None = None) -> float | None:
    """Fraction of the trace's images whose predicted class is the true label (``None`` without labels)."""
    y = labels if labels is not None else trace.labels
    if y is None or len(trace) == 0:
        return None
    return float((trace.target.cpu() == y.cpu().long()).double().mean())


def feature_pixel_counts(trace: BackselectTrace) -> Tensor:
    """``(N, Pmax)`` float64: how many pixels each feature covers (1 everywhere for pixel features)."""
    n, pmax = trace.order_padded.shape
    groups = trace.feature_map().groups.reshape(n, -1).long()
    counts = torch.zeros(n, pmax, dtype=torch.float64)
    return counts.scatter_add_(1, groups, torch.ones_like(groups, dtype=torch.float64))


def sis_fractions(trace: BackselectTrace, threshold: float, counts: Tensor | None = None) -> Tensor:
    """``(N,)`` float64: the fraction of the image's pixels in each SIS at ``threshold``;
    NaN where the full image is below it."""
    c = feature_pixel_counts(trace) if counts is None else counts
    _, h, w = trace.image_shape
    out = torch.full((len(trace),), float("nan"), dtype=torch.float64)
    for i, s in enumerate(trace.find_sis(float(threshold))):
        if s is not None:
            out[i] = c[i, s].sum() / (h * w)
    return out


def sis_fraction_matrix(trace: BackselectTrace, thresholds: Sequence[float]) -> Tensor:
    """``(T, N)`` float64 :func:`sis_fractions` at each threshold."""
    counts = feature_pixel_counts(trace)
    if not len(thresholds):
        return torch.empty(0, len(trace), dtype=torch.float64)
    return torch.stack([sis_fractions(trace, t, counts) for t in thresholds])


@dataclass
class SizeCurve:
    """Mean SIS size (fraction of the image) per threshold, with its interval.

    ``mean``, ``low``, ``high``: ``(T,)`` float64 (NaN where undefined); ``n``: ``(T,)``
    int64 images with ``f(x) ≥ τ``.
    """

    label: str
    thresholds: tuple[float, ...]
    mean: Tensor
    low: Tensor
    high: Tensor
    n: Tensor
    n_images: int
    accuracy: float | None = None
    level: float = 0.95
    method: str = CI_METHOD_BOUNDED
    meta: dict[str, Any] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One dict per threshold (for CSV tables)."""
        return [
            {
                "series": self.label,
                "threshold": t,
                "n": int(self.n[k]),
                "mean_sis_fraction": float(self.mean[k]),
                "ci_low": float(self.low[k]),
                "ci_high": float(self.high[k]),
                "accuracy": "" if self.accuracy is None else self.accuracy,
            }
            for k, t in enumerate(self.thresholds)
        ]


def sis_size_curve(
    trace: BackselectTrace,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    label: str = "",
    select: Tensor | None = None,
    labels: Tensor | None = None,
    level: float = 0.95,
    fractions: Tensor | None = None,
) -> SizeCurve:
    """Mean SIS size with a bootstrap interval inside ``[0, 1]`` at each τ (none with fewer than
    :data:`~overinterp.analysis.stats.MIN_VALUES` images), over the images in ``select`` (``(N,)`` bool,
    default all).

    ``fractions``: a precomputed ``(T, N)`` :func:`sis_fraction_matrix` for the same thresholds.
    """
    ts = tuple(float(t) for t in thresholds)
    f = sis_fraction_matrix(trace, ts) if fractions is None else fractions
    if select is not None:
        f = f[:, select.cpu().bool()]
    stats = [bounded_mean_ci(f[k], level) for k in range(len(ts))]
    acc = trace_accuracy(trace, labels)
    return SizeCurve(
        label=label,
        thresholds=ts,
        mean=torch.tensor([s.mean for s in stats], dtype=torch.float64),
        low=torch.tensor([s.low for s in stats], dtype=torch.float64),
        high=torch.tensor([s.high for s in stats], dtype=torch.float64),
        n=torch.tensor([s.n for s in stats], dtype=torch.int64),
        n_images=int(f.shape[1]),
        accuracy=acc,
        level=level,
    )


def plot_sis_size_curves(curves: Sequence[SizeCurve], ax: Any = None, title: str | None = None) -> Any:
    """Figure 6: mean SIS size (% of the image) against τ, one line per curve, shaded
    interval, accuracy in the legend. Returns the axes."""
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 4.0))
    for i, c in enumerate(curves):
        st = series_style(i, len(curves))
        x = list(c.thresholds)
        acc = "" if c.accuracy is None else f", acc. {100 * c.accuracy:.1f}%"
        ax.plot(x, (100 * c.mean).tolist(), label=f"{c.label}{acc}", **st)
        ok = ~torch.isnan(c.low)
        if bool(ok.any()):
            xs = [t for t, k in zip(x, ok.tolist()) if k]
            ax.fill_between(
                xs,
                (100 * c.low[ok]).tolist(),
                (100 * c.high[ok]).tolist(),
                color=st["color"],
                alpha=0.18,
                linewidth=0,
                hatch=None,
            )
            ax.errorbar(
                xs,
                (100 * c.mean[ok]).tolist(),
                yerr=[(100 * (c.mean - c.low)[ok]).tolist(), (100 * (c.high - c.mean)[ok]).tolist()],
                fmt="none",
                ecolor=st["color"],
                elinewidth=0.9,
                capsize=2.5,
            )
    ax.set_xlabel("confidence threshold τ")
    ax.set_ylabel("mean SIS size (% of image)")
    level = int(round(100 * curves[0].level)) if curves else 95
    ax.set_title(title or f"SIS size vs threshold ({level}% CI: bootstrap; none for n < {MIN_VALUES})", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.set_ylim(bottom=0)
    if curves:
        ax.legend(fontsize=8, loc="best", title="model (accuracy on these images)", title_fontsize=8)
    return ax
