"""Is a backward-selection method faithful to exact on *this* model? The frontier for one
model, at a cost the user sees before any work.

:func:`plan_check` says what a check costs: exact's ``P(P+1)/2`` forward passes per image
and the method's planned passes, turned into seconds by timing a forward and a
forward+backward batch of the model here. :func:`check_method` runs exact and the method
on the same images and pairs their measures image by image
(:mod:`overinterp.analysis.faithfulness`): Δ accuracy and Δ mean probability of the
full-image class on each trace's own 5% subsets, SIS size at τ = 0.99 and 0.9 as a ratio
to exact's, each difference with a paired 95% t interval, beside the targets the frontier
holds the methods to (:data:`~overinterp.analysis.faithfulness.TARGETS`).
"""

from __future__ import annotations

import math
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import Tensor

from overinterp.analysis.faithfulness import TARGETS, compare_measures, trace_measures
from overinterp.analysis.stats import too_few
from overinterp.experiments.throughput import probe_throughput
from overinterp.sis import backselect
from overinterp.sis.backselect import DEFAULT_BATCH_SIZE
from overinterp.sis.methods import Exact, Method

__all__ = ["CheckPlan", "MethodCheck", "plan_check", "check_method", "engine_seconds", "PROBE_SECONDS", "check_command"]

#: seconds of the throughput probe behind the cost printed in advance
PROBE_SECONDS = 1.0


@dataclass(frozen=True)
class CheckPlan:
    """What :func:`check_method` will cost: per image, exact's and the method's planned passes
    (``forward``, ``forward_backward``), their cost in forward-equivalents (a forward+backward
    pass weighted by ``fb_ratio``, its measured cost in forward passes) and estimated seconds."""

    images: int
    num_features: int
    exact: dict[str, int]
    method: dict[str, int]
    fb_ratio: float
    forward_s: float
    method_name: str

    @property
    def exact_forward_equivalents(self) -> float:
        return float(self.exact["forward"])

    @property
    def method_forward_equivalents(self) -> float:
        return self.method["forward"] + self.fb_ratio * self.method["forward_backward"]

    @property
    def seconds(self) -> dict[str, float]:
        """Estimated seconds for all images: exact, the method, and both."""
        e = self.images * self.exact_forward_equivalents * self.forward_s
        m = self.images * self.method_forward_equivalents * self.forward_s
        return {"exact": e, "method": m, "total": e + m}

    def describe(self) -> str:
        s = self.seconds
        return (
            f"{self.images} images, P = {self.num_features} features each: exact {self.exact['forward']:,} forward "
            f"passes per image; {self.method_name} planned {self.method['forward']:,} forward + "
            f"{self.method['forward_backward']:,} forward+backward"
            + (f" (= {self.fb_ratio:.2f} forward each)" if self.method["forward_backward"] else "")
            + " = "
            f"{self.method_forward_equivalents:,.0f} forward-equivalents "
            f"({100 * self.method_forward_equivalents / self.exact_forward_equivalents:.2f}% of exact). "
            f"Estimated time here: {_duration(s['total'])} (exact {_duration(s['exact'])}, "
            f"{self.method_name} {_duration(s['method'])})"
        )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_check(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    method: Method,
    *,
    features: Tensor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> CheckPlan:
    """The cost of :func:`check_method` on ``images`` ``(N, C, H, W)``, before any of it runs.

    Raises:
        ValueError: no images, or a ``method`` without a cost model (``planned_cost``).
    """
    if images.dim() != 4 or images.shape[0] == 0:
        raise ValueError(f"check_method needs at least one image (N, C, H, W), got shape {tuple(images.shape)}")
    if not hasattr(method, "planned_cost"):
        raise ValueError(f"method {method.name!r} has no planned_cost: its cost cannot be shown in advance")
    p = images.shape[2] * images.shape[3] if features is None else int(features.max()) + 1
    tp = probe_throughput(
        model,
        tuple(images.shape[1:]),
        batch_size=min(batch_size, 64),
        seconds=PROBE_SECONDS,
        device=images.device,
        dtype=images.dtype,
    )
    engine_s = engine_seconds(model, images[0], batch_size)
    return CheckPlan(
        images=int(images.shape[0]),
        num_features=p,
        exact=Exact().planned_cost(p),
        method=method.planned_cost(p),
        # a forward-only model runs only forward-only methods: no forward+backward pass to weigh
        fb_ratio=0.0 if tp.fb_cost is None else tp.fb_cost,
        # seconds per exact evaluation through the engine (candidate building included), not a bare forward
        forward_s=max(tp.forward_seconds, engine_s),
        method_name=method.name,
    )


def engine_seconds(model: Callable[[Tensor], Tensor], image: Tensor, batch_size: int) -> float:
    """Seconds per exact candidate evaluation through the selection engine (building the masked
    candidates included), from exact backward selection of ``image`` ``(C, H, W)`` over about 64
    patches (about 2,080 evaluations)."""
    from overinterp.sis.features import patch_features

    h, w = image.shape[1:]
    side = max(1, math.ceil(math.sqrt(h * w / 64)))
    t0 = time.perf_counter()
    trace = backselect(
        model,
        image.unsqueeze(0),
        method=Exact(),
        features=patch_features(h, w, side),
        batch_size=batch_size,
        progress=False,
    )
    return (time.perf_counter() - t0) / max(1, int(trace.meta.get("evaluations", 1)))


@dataclass
class MethodCheck:
    """The result of :func:`check_method`.

    ``comparison``: :func:`~overinterp.analysis.faithfulness.compare_measures` of the
    method against exact; ``cost``: measured passes and forward-equivalents per image of
    both and their ratio; ``seconds``: wall seconds per image of both; ``measures``:
    per-image values of both (``{"exact": {...}, "method": {...}}``).
    """

    plan: CheckPlan
    method: dict[str, Any]
    comparison: dict[str, Any]
    cost: dict[str, float]
    seconds: dict[str, float]
    measures: dict[str, dict[str, list[float]]]
    traces: dict[str, Any] = field(default_factory=dict, repr=False)

    def meets_targets(self) -> dict[str, bool]:
        """Each target of the frontier: met by the mean (and, for Δ p, by the interval's top)."""
        c = self.comparison
        out = {
            "d_prob5": c["d_prob5"]["mean"] >= TARGETS["d_prob5"] and not (c["d_prob5"]["hi"] < TARGETS["d_prob5"]),
            "d_acc5": c["d_acc5"]["mean"] >= TARGETS["d_acc5"],
        }
        for key in ("sis99_ratio", "sis90_ratio"):
            if not math.isnan(c[key]):
                out[key] = c[key] <= TARGETS["sis_ratio"]
        if self.plan.num_features >= 1024:  # the cost target is set for one feature per pixel at 32×32 and up
            out["cost"] = self.cost["fraction_of_exact"] <= TARGETS["cost_fraction"]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "images": self.plan.images,
            "num_features": self.plan.num_features,
            "method": self.method,
            "comparison": self.comparison,
            "cost": self.cost,
            "seconds_per_image": self.seconds,
            "targets": TARGETS,
            "meets_targets": self.meets_targets(),
            "measures": self.measures,
        }

    def format(self) -> str:
        """The check as a few lines of text."""
        c, n = self.comparison, self.plan.images

        def ci(key: str, scale: float = 1.0, digits: int = 3) -> str:
            d = c[key]
            if d["n"] == 0:
                return "–"
            if d["lo"] != d["lo"]:  # no interval: too few images, or all differences equal and n = 1
                return f"{scale * d['mean']:+.{digits}f} ({too_few(d['n'])})"
            return f"{scale * d['mean']:+.{digits}f} [{scale * d['lo']:+.{digits}f}, {scale * d['hi']:+.{digits}f}]"

        ok = self.meets_targets()
        mark = {True: "ok", False: "MISSED"}
        lines = [
            f"{self.method['name']} vs exact on {n} images (paired differences, method − exact, 95% t intervals "
            f"over images; {n} images give wide intervals):",
            f"  cost: {self.cost['method_forward_equivalents']:,.0f} forward-equivalents per image = "
            f"{100 * self.cost['fraction_of_exact']:.2f}% of exact's {self.cost['exact_forward_equivalents']:,.0f} "
            + (
                f"[{mark[ok['cost']]}: ≤ {100 * TARGETS['cost_fraction']:.0f}%]"
                if "cost" in ok
                else f"[no cost target below P = 1,024; P = {self.plan.num_features}]"
            )
            + f"; wall {self.seconds['method']:.1f} s vs "
            f"{self.seconds['exact']:.1f} s per image",
            f"  accuracy on own 5% subsets: {100 * c['acc5']:.1f}%, Δ {ci('d_acc5', 100, 1)} pts "
            f"[{mark[ok['d_acc5']]}: mean ≥ {100 * TARGETS['d_acc5']:+.0f} pt]",
            f"  mean p(full-image class) on own 5% subsets: {c['prob5']:.3f} "
            f"(exact {c['prob5'] - c['d_prob5']['mean']:.3f}), "
            f"Δ {ci('d_prob5')} [{mark[ok['d_prob5']]}: mean ≥ {TARGETS['d_prob5']:+.2f}, interval not wholly below]",
        ]
        for tau, key in (("0.99", "sis99"), ("0.9", "sis90")):
            if math.isnan(c[f"{key}_ratio"]):
                lines.append(f"  SIS at τ = {tau}: no image has one under both methods")
            else:
                lines.append(
                    f"  SIS at τ = {tau}: ×{c[f'{key}_ratio']:.2f} exact's size (Δ {ci('d_' + key, 1, 1)} features, "
                    f"{int(c[f'd_{key}']['n'])} images) [{mark[ok[key + '_ratio']]}: ≤ ×{TARGETS['sis_ratio']}]"
                )
        lines.append("  verdict: " + ("faithful on these images" if all(ok.values()) else "NOT within the targets"))
        return "\n".join(lines)


def check_method(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    method: Method,
    *,
    labels: Tensor | None = None,
    features: Tensor | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    plan: CheckPlan | None = None,
    exact_trace: Any = None,
    log: Callable[[str], None] | None = None,
) -> MethodCheck:
    """Run exact and ``method`` on ``images`` ``(N, C, H, W)`` (pixels in ``[0, 1]``; ``model``
    a :class:`~overinterp.Classifier` or a callable on them) and compare them image by image.

    ``labels`` ``(N,)``: true classes for the accuracy on 5% subsets (default: agreement with
    the full-image prediction). ``exact_trace``: an exact trace of these images already made
    (skips exact). ``plan``: from :func:`plan_check` (made here when absent).
    """
    say = log or (lambda msg: None)
    plan = plan or plan_check(model, images, method, features=features, batch_size=batch_size)
    say(plan.describe())
    traces, seconds, counts = {}, {}, {}
    for name, m in (("exact", Exact()), ("method", method)):
        if name == "exact" and exact_trace is not None:
            traces[name], seconds[name] = exact_trace, float("nan")
            counts[name] = {"forward": float(plan.exact["forward"]), "forward_backward": 0.0}
            continue
        t0 = time.perf_counter()
        traces[name] = backselect(
            model, images, method=m, features=features, batch_size=batch_size, progress=progress, labels=labels
        )
        seconds[name] = (time.perf_counter() - t0) / len(images)
        meta = traces[name].meta
        counts[name] = {
            "forward": float(meta.get("evaluations", 0)) / len(images),
            "forward_backward": float(meta.get("forward_backward_passes", 0)) / len(images),
        }
        say(f"{m.name}: {seconds[name]:.1f} s per image")
    fe = {k: v["forward"] + plan.fb_ratio * v["forward_backward"] for k, v in counts.items()}
    measures = {k: trace_measures(t, model, images, labels) for k, t in traces.items()}
    comparison = compare_measures(measures["method"], measures["exact"])
    return MethodCheck(
        plan=plan,
        method=method.describe(),
        comparison=comparison,
        cost={
            "method_forward": counts["method"]["forward"],
            "method_forward_backward": counts["method"]["forward_backward"],
            "fb_ratio": plan.fb_ratio,
            "method_forward_equivalents": fe["method"],
            "exact_forward_equivalents": fe["exact"],
            "fraction_of_exact": fe["method"] / fe["exact"],
        },
        seconds=seconds,
        measures={k: {m: v.tolist() for m, v in d.items()} for k, d in measures.items()},
        traces=traces,
    )


def check_command(
    model: str, data: str, method: Mapping[str, Any], *, images: int = 8, patch: int = 1, device: str = "cpu"
) -> str:
    """The ``overinterp check-method`` command line, quoted for a POSIX shell, that runs exact beside
    ``method`` (a method description, :meth:`~overinterp.sis.methods.Method.describe`) on the first
    ``images`` images of ``data`` (a dataset spec) with ``model`` (a model spec string,
    :meth:`~overinterp.models.ModelSpec.as_text`). The method's parameters that differ from their
    defaults become its flags (as the method registry declares them), ``patch`` > 1 ``--patch`` and
    a device other than the CPU ``--device``."""
    from overinterp.sis.methods import method_classes, method_from_description

    method = method_from_description(method).describe()  # parameters a recorded description lacks: as it ran
    params = method.get("params") or {}
    args = ["overinterp", "check-method", model, data, "--images", str(int(images)), "--method", method["name"]]
    for spec in method_classes()[method["name"]].param_specs():
        value = params.get(spec.name)
        if spec.cli and value is not None and not (spec.has_default and value == spec.default):
            args += [spec.option, str(value)]
    if patch != 1:
        args += ["--patch", str(int(patch))]
    if device != "cpu":
        args += ["--device", str(device)]
    return shlex.join(args)
