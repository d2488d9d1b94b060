"""How faithful a backward-selection method's traces are to exact's, on the same images:
the frontier's measures (``bench/frontier.py``), per image and as paired differences.

Per image (:func:`trace_measures`): on the 5% subset (the last-removed 5% of features, the
rest at the trace's baseline) whether the model's prediction is the true label (``acc5``),
the probability of the full-image class (``prob5``) and its drop from the full image
(``drop5``); the SIS size at τ = 0.99 and 0.9 (re-verified with the model; NaN where there
is none) and whether there is one. :func:`compare_measures` pairs a method's values with
exact's image by image: each difference's mean with a paired Student's t interval (the
interval of the mean of the per-image differences), and each SIS size as a ratio of means
over the images where both have one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor

from overinterp.analysis.stats import MIN_VALUES, mean_ci
from overinterp.analysis.subsets import subset_predictions

__all__ = [
    "TAUS",
    "Paired",
    "trace_measures",
    "compare_measures",
    "screening_report",
    "TARGETS",
    "UNSURE_SHARE",
    "UNSURE_RATIONALE",
    "SCREENING_CAVEAT",
]

#: SIS thresholds of the frontier
TAUS = (0.99, 0.9)

#: the faithfulness targets (issue 24): Δ mean p on own 5% subsets ≥ −0.02 (and no whole
#: interval below it), Δ accuracy ≥ −1 point, SIS size ≤ 1.25× exact's; cost ≤ 1% of exact
TARGETS = {"d_prob5": -0.02, "d_acc5": -0.01, "sis_ratio": 1.25, "cost_fraction": 0.01}


@dataclass(frozen=True)
class Paired:
    """``mean`` of per-image differences (method − exact) with a paired ``level`` t interval
    ``[low, high]`` over ``n`` images, cut to ``bounds`` (the range a difference of the measure
    can take, e.g. ``(-1, 1)`` for accuracies and probabilities). The interval collapses to the
    mean when every difference is equal and is NaN with fewer than
    :data:`~overinterp.analysis.stats.MIN_VALUES` images (a t interval on 2-4 values is no verdict)."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(
        cls, a: Tensor, b: Tensor, level: float = 0.95, bounds: tuple[float, float] = (-math.inf, math.inf)
    ) -> "Paired":
        d = torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)
        d = d[~torch.isnan(d)]
        n = int(d.numel())
        if n == 0:
            return cls(math.nan, math.nan, math.nan, 0)
        m = float(d.mean())
        if n >= 2 and float(d.std()) == 0.0:
            return cls(m, m, m, n)
        if n < MIN_VALUES:
            return cls(m, math.nan, math.nan, n)
        ci = mean_ci(d, level)
        return cls(m, max(ci.low, bounds[0]), min(ci.high, bounds[1]), n)

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "lo": self.low, "hi": self.high, "n": self.n}


def trace_measures(
    trace: Any, model: Callable[[Tensor], Tensor], images: Tensor, labels: Tensor | None = None
) -> dict[str, Tensor]:
    """Per-image measures of one trace: each a float64 ``(N,)`` tensor.

    ``images`` ``(N, C, H, W)`` are the ones the trace was made from; ``labels`` ``(N,)``
    the true classes (default: the trace's, else its targets, so ``acc5`` is then agreement
    with the full-image prediction). Keys: ``acc5``, ``prob5``, ``drop5``, ``sis99``,
    ``sis90`` (NaN without SIS), ``has_sis99``, ``has_sis90``.
    """
    if labels is None:
        labels = trace.labels if trace.labels is not None else trace.target
    keep = trace.keep_mask(0.05)
    sp = subset_predictions(model, images, keep, trace.target, trace.baseline)
    p_full = torch.sigmoid(trace.full_logodds.double())
    out = {
        "acc5": (sp["prediction"] == torch.as_tensor(labels).cpu().long()).double(),
        "prob5": sp["target_probability"].double(),
        "drop5": (p_full - sp["target_probability"]).double(),
    }
    for tau in TAUS:
        sizes = trace.find_sis(tau, model, images).sizes
        key = f"sis{int(round(tau * 100))}"
        out[key] = torch.tensor([math.nan if s is None else float(s) for s in sizes], dtype=torch.float64)
        out[f"has_{key}"] = (~torch.isnan(out[key])).double()
    return out


def compare_measures(method: Mapping[str, Tensor], exact: Mapping[str, Tensor], level: float = 0.95) -> dict[str, Any]:
    """A method's per-image measures against exact's on the same images.

    Returns, for every measure ``k``: ``k`` (the method's mean over images where defined) and
    ``d_k`` (:class:`Paired` as a dict); and ``sis99_ratio`` / ``sis90_ratio``: the method's
    mean SIS size over exact's, over the images where both have an SIS (NaN when none).
    """
    row: dict[str, Any] = {}
    for k, v in method.items():
        ok = ~torch.isnan(v)
        row[k] = float(v[ok].mean()) if bool(ok.any()) else math.nan
        bounds = (-math.inf, math.inf) if k.startswith("sis") else (-1.0, 1.0)  # shares, probabilities
        row[f"d_{k}"] = Paired.of(v, exact[k], level, bounds).as_dict()
    for tau in TAUS:
        key = f"sis{int(round(tau * 100))}"
        both = ~(torch.isnan(method[key]) | torch.isnan(exact[key]))
        row[f"{key}_ratio"] = (
            float(method[key][both].mean() / exact[key][both].mean()) if bool(both.any()) else math.nan
        )
    return row


#: the share of an image's screened steps at or above which the gradient screen counts as unsure on it
#: (:data:`UNSURE_RATIONALE` says why)
UNSURE_SHARE = 0.25
UNSURE_RATIONALE = (
    "a screen that ranked the candidates at random would put exact's best in its bottom quarter on about a "
    "quarter of the steps, so at a share of 0.25 or more the screen did no better than chance on that image"
)

#: what the share does not say (measured with ``bench/frontier.py``: bench/results/frontier-split.md)
SCREENING_CAVEAT = (
    "the share describes the gradient screen, not the damage: over the frontier's 9 models, how an image's "
    "share ranks against its loss of confidence against exact on its own 5% subset ranged from Spearman "
    "-0.38 to +0.45 (16 images each, bench/results/frontier-round2.md), so only a check against exact "
    "measures faithfulness"
)


def screening_report(trace: Any, flag_share: float | None = None) -> dict[str, Any] | None:
    """The per-image screening diagnostic a gradient-screened method (``fast``) records in
    ``trace.meta["screening"]``, summarised for a report; ``None`` when the trace has none.

    Per image: ``share``, the fraction of its screened steps whose exact best came from the
    bottom quarter of the gradient screen or from outside it (0 when the gradient ranked exact's
    choice near the top at every step; about 0.25 or more when it ranked no better than chance;
    NaN for an image without screened steps), ``steps`` and ``bottom_quarter_steps``, and the
    other per-image counts the method records (e.g. ``extensions``). ``mean_share`` and
    ``max_share`` over the images with screened steps (NaN when none), ``flagged``: the images
    with ``share ≥ flag_share`` (default :data:`UNSURE_SHARE`), where the screen was unsure. The share
    does not say where the method went wrong (:data:`SCREENING_CAVEAT`); ``overinterp
    check-method`` (exact on a sample) measures that.
    """
    scr = trace.meta.get("screening") if hasattr(trace, "meta") else None
    if not scr:
        return None
    flag_share = UNSURE_SHARE if flag_share is None else float(flag_share)
    steps, bottom = list(scr["steps"]), list(scr["bottom_quarter_steps"])
    share = [b / s if s else math.nan for b, s in zip(bottom, steps)]
    seen = [v for v in share if not math.isnan(v)]
    flagged = [i for i, v in enumerate(share) if v >= flag_share]
    other = {k: list(v) for k, v in scr.items() if k not in ("steps", "bottom_quarter_steps")}
    return {
        "share": share,
        "steps": steps,
        "bottom_quarter_steps": bottom,
        **other,
        "mean_share": sum(seen) / len(seen) if seen else math.nan,
        "max_share": max(seen) if seen else math.nan,
        "flagged": flagged,
        "flag_share": flag_share,
    }
