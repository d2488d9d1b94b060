"""SIS size of correctly vs incorrectly classified images (paper Figure 5) and the
mean confidence of each group (Figure S3), across thresholds, from a stored trace.

At each τ only images whose full-image confidence ``f(x) ≥ τ`` count (they are the
ones with an SIS). The percentage increase is ``100·(m_c − m_i)/m_i`` (``m_c``,
``m_i``: mean SIS size of correctly / incorrectly classified images); its interval
is Welch's t interval of the difference ``m_c − m_i`` scaled by the same
``100/m_i`` (the denominator taken as fixed).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

import torch
from torch import Tensor

from overinterp.analysis.sis_size import DEFAULT_THRESHOLDS, full_confidence, sis_fraction_matrix
from overinterp.analysis.stats import CI_METHOD_DIFF, MIN_VALUES, welch_diff_ci
from overinterp.analysis.style import pyplot, series_style
from overinterp.sis.trace import BackselectTrace

__all__ = ["CorrectnessComparison", "compare_correct_incorrect", "plot_percent_increase", "plot_group_confidence"]


@dataclass
class CorrectnessComparison:
    """Per threshold (all ``(T,)`` float64, counts int64): group sizes, mean SIS sizes
    (fractions of the image), the difference with its interval, the percentage increase
    with its interval, and each group's mean full-image confidence."""

    label: str
    thresholds: tuple[float, ...]
    n_correct: Tensor
    n_incorrect: Tensor
    mean_correct: Tensor
    mean_incorrect: Tensor
    diff: Tensor
    diff_low: Tensor
    diff_high: Tensor
    pct_increase: Tensor
    pct_low: Tensor
    pct_high: Tensor
    conf_correct: Tensor
    conf_incorrect: Tensor
    level: float = 0.95
    method: str = CI_METHOD_DIFF

    def rows(self) -> list[dict[str, Any]]:
        """One dict per threshold (for CSV tables)."""
        keys = (
            "n_correct",
            "n_incorrect",
            "mean_correct",
            "mean_incorrect",
            "diff",
            "diff_low",
            "diff_high",
            "pct_increase",
            "pct_low",
            "pct_high",
            "conf_correct",
            "conf_incorrect",
        )
        out = []
        for k, t in enumerate(self.thresholds):
            row: dict[str, Any] = {"series": self.label, "threshold": t}
            for key in keys:
                v = getattr(self, key)[k]
                row[key] = int(v) if key.startswith("n_") else float(v)
            out.append(row)
        return out


def compare_correct_incorrect(
    trace: BackselectTrace,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    *,
    labels: Tensor | None = None,
    label: str = "",
    level: float = 0.95,
    fractions: Tensor | None = None,
) -> CorrectnessComparison:
    """Compare SIS sizes of correctly and incorrectly classified images at each τ.

    ``labels``: ``(N,)`` true classes (default ``trace.labels``); ``fractions``: a
    precomputed ``(T, N)`` :func:`~overinterp.analysis.sis_size.sis_fraction_matrix`.
    """
    y = labels if labels is not None else trace.labels
    if y is None:
        raise ValueError("comparing correct and incorrect predictions needs the true labels")
    ts = tuple(float(t) for t in thresholds)
    f = sis_fraction_matrix(trace, ts) if fractions is None else fractions
    correct = trace.target.cpu() == y.cpu().long()
    conf = full_confidence(trace)
    cols: dict[str, list[float]] = {
        k: []
        for k in (
            "n_correct",
            "n_incorrect",
            "mean_correct",
            "mean_incorrect",
            "diff",
            "diff_low",
            "diff_high",
            "pct_increase",
            "pct_low",
            "pct_high",
            "conf_correct",
            "conf_incorrect",
        )
    }
    nan = float("nan")
    for k, t in enumerate(ts):
        counted = conf >= t
        a, b = f[k][counted & correct], f[k][counted & ~correct]
        d = welch_diff_ci(a, b, level)
        scale = 100.0 / d.mean_b if d.n_b and d.mean_b > 0 else nan
        if min(d.n_a, d.n_b) < MIN_VALUES:  # too few images in a group: no interval
            d = replace(d, low=nan, high=nan)
        else:  # a difference of two fractions lies in [-1, 1] (and the increase is >= -100%)
            d = replace(d, low=max(-1.0, d.low), high=min(1.0, d.high))
        cols["n_correct"].append(d.n_a)
        cols["n_incorrect"].append(d.n_b)
        cols["mean_correct"].append(d.mean_a)
        cols["mean_incorrect"].append(d.mean_b)
        cols["diff"].append(d.diff)
        cols["diff_low"].append(d.low)
        cols["diff_high"].append(d.high)
        cols["pct_increase"].append(d.diff * scale)
        cols["pct_low"].append(max(-100.0, d.low * scale) if d.low == d.low else nan)
        cols["pct_high"].append(d.high * scale)
        cc, ci = conf[counted & correct], conf[counted & ~correct]
        cols["conf_correct"].append(float(cc.mean()) if cc.numel() else nan)
        cols["conf_incorrect"].append(float(ci.mean()) if ci.numel() else nan)
    tensors = {k: torch.tensor(v, dtype=torch.int64 if k.startswith("n_") else torch.float64) for k, v in cols.items()}
    return CorrectnessComparison(label=label, thresholds=ts, level=level, **tensors)


def plot_percent_increase(
    comparisons: Sequence[CorrectnessComparison], ax: Any = None, title: str | None = None, show_n: bool = True
) -> Any:
    """Figure 5: percentage increase of mean SIS size, correct vs incorrect, against τ,
    with error bars (the interval), one series per comparison; ``n`` per group annotated."""
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, c in enumerate(comparisons):
        st = series_style(i, len(comparisons))
        x = torch.tensor(c.thresholds, dtype=torch.float64)
        y = c.pct_increase
        ok = ~torch.isnan(y)
        if not bool(ok.any()):
            continue
        has_ci = ok & ~torch.isnan(c.pct_low)
        ax.plot(x[ok].tolist(), y[ok].tolist(), label=c.label, **st)
        if bool(has_ci.any()):
            ax.errorbar(
                x[has_ci].tolist(),
                y[has_ci].tolist(),
                yerr=[(y - c.pct_low)[has_ci].tolist(), (c.pct_high - y)[has_ci].tolist()],
                capsize=3,
                elinewidth=1.0,
                linestyle="none",
                marker="none",
                color=st["color"],
            )
        no_ci = ok & ~has_ci
        if bool(no_ci.any()):  # a group with fewer than two images: no interval, hollow marker
            ax.plot(
                x[no_ci].tolist(),
                y[no_ci].tolist(),
                linestyle="none",
                marker=st["marker"],
                color=st["color"],
                markerfacecolor="white",
                markersize=st["markersize"],
            )
        if show_n:
            for k in ok.nonzero().flatten().tolist():
                ax.annotate(
                    f"{int(c.n_correct[k])}/{int(c.n_incorrect[k])}",
                    (float(x[k]), float(y[k])),
                    textcoords="offset points",
                    xytext=(4, 6 + 9 * i),
                    fontsize=6,
                    color=st["color"],
                )
    ax.axhline(0.0, color="0.4", linewidth=0.8, linestyle=":")
    ax.set_xlabel("confidence threshold τ")
    ax.set_ylabel("% increase in mean SIS size\n(correct vs incorrect)")
    level = int(round(100 * comparisons[0].level)) if comparisons else 95
    ax.set_title(
        title
        or f"Correct vs incorrect: {level}% CI = Welch's t on the difference in means\n"
        "labels: n correct / n incorrect with f(x) ≥ τ; hollow: no CI (a group under 5 images)",
        fontsize=9,
    )
    ax.grid(True, alpha=0.3)
    if any(bool((~torch.isnan(c.pct_increase)).any()) for c in comparisons):
        ax.legend(fontsize=8, loc="best")
    return ax


def plot_group_confidence(
    comparisons: Sequence[CorrectnessComparison], ax: Any = None, title: str | None = None
) -> Any:
    """Figure S3: mean full-image confidence of correctly (solid) and incorrectly (dashed)
    classified images among those with ``f(x) ≥ τ``, against τ."""
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    for i, c in enumerate(comparisons):
        st = series_style(i, len(comparisons))
        x = list(c.thresholds)
        base = {k: v for k, v in st.items() if k != "linestyle"}
        ax.plot(x, c.conf_correct.tolist(), linestyle="-", label=f"{c.label}: correct", **base)
        inc = {**base, "marker": "x" if base["marker"] != "x" else "+"}
        ax.plot(x, c.conf_incorrect.tolist(), linestyle="--", label=f"{c.label}: incorrect", **inc)
    ax.set_xlabel("confidence threshold τ")
    ax.set_ylabel("mean confidence f(x)")
    ax.set_title(title or "Mean confidence of each group (images with f(x) ≥ τ)", fontsize=9)
    ax.grid(True, alpha=0.3)
    if comparisons:
        ax.legend(fontsize=7, loc="best")
    return ax
