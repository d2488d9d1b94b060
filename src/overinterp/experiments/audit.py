"""One call from a model and its images to a verdict on overinterpretation.

:func:`audit` (``overinterp.audit(model, data)``; ``overinterp audit MODEL DATA --out DIR``):

1. **open and check** - the model (a module, a :class:`~overinterp.Classifier`, a model spec) and
   the images (a tensor, :class:`~overinterp.data.LabeledImages`, a dataset spec) are opened once
   and validated (:func:`~overinterp.training.pipeline.open_inputs`); then the pipeline check
   (:func:`~overinterp.training.pipeline.check_pipeline`: accuracy clearly above chance, predictions
   not collapsed) on up to :data:`CHECK_IMAGES` images of the sample refuses a mis-declared model
   before any long work (``force=True`` overrides);
2. **probe** - a few seconds of the model's raw forward throughput at the engine's batch size and
   layout, and the cost of a forward+backward pass in forward passes (``None``: forward-only);
3. **plan** - each candidate method's passes per image from its ``planned_cost``, the estimated
   time per image and how many images a ``budget`` buys; with a budget the most faithful method
   that fits at least :data:`MIN_IMAGES` images is chosen (large images: the finest patch grid
   where one fits), else the faithful one that fits the most, an :data:`UNFAITHFUL` one only when
   no faithful one fits one image. The plan also says how many images the verdict needs
   (:func:`images_needed`) and warns when the budget buys fewer. Printed and written to
   ``DIR/plan.json`` *before* any long work;
4. **job** - the resumable dataset job in ``DIR/job`` over a sample fixed by ``seed`` and
   stratified by class (:func:`stratified_order`: every prefix is stratified, so a larger budget
   extends the sample). With a budget the job is capped: shards run until the budget (less the
   reserve for evaluation and report) is spent, the estimate is revised after the first shard
   and printed with an ETA; finished shards are kept and a rerun with a larger budget continues;
5. **evaluation** - accuracy (Wilson intervals) on the full images, the model's own 5%
   backward-selection subsets, 5% random subsets and the mask alone; the confidence drop and
   SIS sizes at :data:`THRESHOLDS` (bootstrap intervals inside [0, 1]); ``DIR/results.csv``;
   the verdict in plain words (:func:`verdict`);
6. **report** - ``report(DIR)`` (the command line and :func:`overinterp.audit` pass the audit
   report, :mod:`overinterp.report.audit`: ``DIR/report/index.html``).

Rerunning on the same folder resumes from the stored plan (the probe is not repeated, so the job
keeps its identity); another model, data, method or image cap is refused with the differences.
``DIR/audit.json`` records the plan, planned and finished images, budget and time spent, and for a
gradient-screened method (``fast``) how sure its screen was on each image, with the ``check-method``
command that measures the method against exact on this model (:func:`screening_summary`).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from overinterp._atomic import atomic_write_text
from overinterp.errors import UserInputError
from overinterp.experiments.throughput import Throughput, probe_throughput
from overinterp.sis.methods.registry import (
    audit_ladder,
    forward_only_methods,
    method_classes,
    unfaithful_methods,
)

__all__ = [
    "audit",
    "AuditResult",
    "evaluate_audit",
    "verdict",
    "stratified_order",
    "images_needed",
    "as_audit_model",
    "CHECK_IMAGES",
    "MIN_IMAGES",
    "THRESHOLDS",
    "LADDER",
    "Throughput",
    "AuditPlan",
    "probe_throughput",
    "plan_audit",
    "format_plan",
    "parse_duration",
    "format_duration",
    "method_label",
    "run_audit",
    "PlanRow",
    "UNFAITHFUL",
    "FAITHFULNESS",
    "REPORT_SECONDS",
    "screening_summary",
    "CHECK_METHOD_IMAGES",
]

#: fewest images a budget should buy before a less faithful method is preferred (paired CIs need a few)
MIN_IMAGES = 16
#: images of the sample the pipeline check runs the model on (forward passes only)
CHECK_IMAGES = 200
#: the spread of SIS sizes (standard deviation, fraction of the image) the plan assumes
SIS_SPREAD = 0.05
#: SIS thresholds the audit records
THRESHOLDS = (0.9, 0.95, 0.99)
#: candidate methods, most faithful first (each method declares its place: ``Method.ladder``)
LADDER: tuple[tuple[str, dict[str, Any]], ...] = audit_ladder()
#: candidates known to be unfaithful: chosen by a budget only when no other fits one image (``Method.faithful``)
UNFAITHFUL = unfaithful_methods()
#: what the plan says about each candidate's faithfulness (``Method.faithfulness``; bench/results/frontier.md)
FAITHFULNESS = {n: cls.faithfulness for n, cls in method_classes().items()}
#: seconds reserved for the subset evaluation and the report (measured: 2-6 s on 2 CPU cores for
#: 8 ImageNet photos with MobileNet and a few hundred CIFAR images with ResNet20)
REPORT_SECONDS = 12.0


@dataclass
class PlanRow:
    """One candidate method in the plan."""

    method: dict[str, Any]
    forward: int | None
    forward_backward: int | None
    forward_equivalents: float | None
    seconds_per_image: float | None
    images_in_budget: int | None
    faithfulness: str
    note: str = ""


@dataclass
class AuditPlan:
    """What the audit will do and what it should cost (written before any long work)."""

    model: str
    dataset: str
    num_features: int
    available_images: int
    images: int
    method: dict[str, Any]
    seconds_per_image: float | None
    job_seconds: float | None
    total_seconds: float | None
    budget_seconds: float | None
    reason: str
    throughput: dict[str, Any]
    rows: list[PlanRow] = field(default_factory=list)
    patch: int = 1
    needs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def method_label(desc: dict[str, Any]) -> str:
    params = desc.get("params") or {}
    from overinterp.sis.methods import make_method

    defaults = make_method(desc["name"]).params() if desc["name"] != "gradient" else {}
    shown = {k: v for k, v in params.items() if defaults.get(k, object()) != v and v is not None}
    if desc["name"] == "gradient":
        shown = {"k": params.get("k")}
    return desc["name"] + ("" if not shown else "(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")")


def _row(method: Any, num_features: int, tp: Throughput, job_budget: float | None, cap: int) -> PlanRow:
    desc = method.describe()
    faith = method.faithfulness
    planner = getattr(method, "planned_cost", None)
    if planner is None:
        return PlanRow(desc, None, None, None, None, None, faith, "no cost model: time unknown until the first shard")
    cost = planner(num_features)
    fb = int(cost.get("forward_backward", 0))
    if fb and tp.fb_cost is None:
        return PlanRow(desc, cost["forward"], fb, None, None, None, faith, "needs gradients: the model is forward-only")
    sec = tp.image_seconds(cost)
    equiv = cost["forward"] + fb * (tp.fb_cost or 0.0)
    fit = None if job_budget is None or sec is None else min(cap, int(job_budget // sec))
    return PlanRow(desc, cost["forward"], fb, equiv, sec, fit, faith)


def plan_audit(
    *,
    model_name: str,
    dataset: str,
    num_features: int | Mapping[int, int],
    available_images: int,
    throughput: Throughput,
    budget_seconds: float | None = None,
    images: int | None = None,
    method: Any = None,
    spent_seconds: float = 0.0,
    needs: dict[str, Any] | None = None,
) -> AuditPlan:
    """Choose the method and the number of images (see the module doc).

    ``num_features``: features per image, or ``{patch size: features}`` of the patch grids to
    choose from (fine to coarse: the finest grid where the most faithful method that fits
    :data:`MIN_IMAGES` images exists, else the coarsest); ``images`` caps the count (default:
    the whole dataset); ``method`` fixes the method (its cost is still estimated);
    ``spent_seconds`` (the probe so far) comes out of the budget; ``needs``: the images the
    verdict needs (:func:`images_needed`), for the plan's warning.

    Raises:
        UserInputError: the budget buys not even one image with any candidate, or
            a fixed method does not fit one image in the budget.
    """
    grids = dict(num_features) if isinstance(num_features, Mapping) else {1: int(num_features)}
    if len(grids) > 1:
        plans, error = [], None
        for p, p_features in grids.items():
            try:
                pl = plan_audit(
                    model_name=model_name,
                    dataset=dataset,
                    num_features=p_features,
                    available_images=available_images,
                    throughput=throughput,
                    budget_seconds=budget_seconds,
                    images=images,
                    method=method,
                    spent_seconds=spent_seconds,
                    needs=needs,
                )
            except UserInputError as exc:  # this grid does not fit one image
                error = exc
                continue
            pl.patch = p
            plans.append(pl)
        if not plans:
            raise error  # type: ignore[misc]
        want = min(available_images if images is None else min(images, available_images), MIN_IMAGES)
        good = [pl for pl in plans if pl.images >= want and not pl.reason.startswith("WARNING")]
        chosen_plan = good[0] if good else plans[-1]
        chosen_plan.reason += f"; patch {chosen_plan.patch}×{chosen_plan.patch} ({chosen_plan.num_features} features)"
        return chosen_plan
    patch_size, num_features = next(iter(grids.items()))
    from overinterp.sis.methods import make_method

    if available_images < 1:
        raise UserInputError("the dataset has no images")
    if images is not None and images < 1:
        raise UserInputError(f"images must be >= 1, got {images}")
    cap = min(available_images, images) if images is not None else available_images
    job_budget = None
    if budget_seconds is not None:
        if budget_seconds <= 0:
            raise UserInputError(f"the budget must be > 0 seconds, got {budget_seconds}")
        job_budget = max(0.0, budget_seconds - spent_seconds - REPORT_SECONDS)
    candidates = [make_method(n, **p) for n, p in audit_ladder()]
    if method is not None and all(c.describe() != method.describe() for c in candidates):
        candidates.insert(0, method)
    rows = [_row(m, num_features, throughput, job_budget, cap) for m in candidates]
    want = min(cap, MIN_IMAGES)
    if method is not None:
        chosen = next(r for r in rows if r.method == method.describe())
        if chosen.note.startswith("needs gradients"):
            raise UserInputError(
                f"method {method.name} needs gradients but the model is forward-only; forward-only methods: "
                + ", ".join(forward_only_methods())
            )
        n = cap if chosen.images_in_budget is None else chosen.images_in_budget
        reason = "method given"
    elif job_budget is None:
        usable = [r for r in rows if r.seconds_per_image is not None and r.method["name"] not in UNFAITHFUL]
        chosen = next((r for r in usable if r.method["name"] == "fast"), None) or min(
            usable, key=lambda r: r.seconds_per_image or 0.0
        )
        n = cap
        reason = f"no budget given: the recommended method ({method_label(chosen.method)}) on every image asked for"
    else:
        faithful = [r for r in rows if r.method["name"] not in UNFAITHFUL]
        fitting = [r for r in faithful if r.images_in_budget is not None and r.images_in_budget >= want]
        some = [r for r in faithful if r.images_in_budget]
        if fitting:
            chosen = fitting[0]
            skipped = [
                f"{method_label(r.method)} fits {r.images_in_budget}"
                for r in rows[: rows.index(chosen)]
                if r.images_in_budget is not None
            ]
            reason = f"the most faithful method that fits {want} image(s)" + (
                f" ({'; '.join(skipped)})" if skipped else ""
            )
        elif some:
            chosen = max(some, key=lambda r: r.images_in_budget or 0)
            reason = (
                f"no faithful method fits {want} images: the one that fits the most (a larger budget buys more; "
                "unfaithful methods are used only when no faithful one fits one image)"
            )
        else:
            cheap = [r for r in rows if r.images_in_budget]
            if not cheap:
                cheapest = min(
                    (r for r in rows if r.seconds_per_image is not None), key=lambda r: r.seconds_per_image or 0.0
                )
                raise UserInputError(
                    f"a budget of {format_duration(budget_seconds or 0)} is too small for even one image: the cheapest "
                    f"method ({method_label(cheapest.method)}) needs about "
                    f"{format_duration(cheapest.seconds_per_image or 0)} per image plus about "
                    f"{format_duration(REPORT_SECONDS + spent_seconds)} for the probe, evaluation and report"
                )
            chosen = max(cheap, key=lambda r: r.images_in_budget or 0)
            reason = "WARNING: no faithful method fits one image; this cheap one is not faithful (see FAITHFULNESS)"
        n = chosen.images_in_budget or 0
    if n < 1:
        raise UserInputError(
            f"method {method_label(chosen.method)} needs about {format_duration(chosen.seconds_per_image or 0)} per "
            f"image: not one image fits a budget of {format_duration(budget_seconds or 0)}"
        )
    job_s = None if chosen.seconds_per_image is None else chosen.seconds_per_image * n
    return AuditPlan(
        model=model_name,
        dataset=dataset,
        num_features=num_features,
        available_images=available_images,
        images=n,
        method=chosen.method,
        seconds_per_image=chosen.seconds_per_image,
        job_seconds=job_s,
        total_seconds=None if job_s is None else job_s + REPORT_SECONDS + spent_seconds,
        budget_seconds=budget_seconds,
        reason=reason,
        throughput=asdict(throughput),
        rows=rows,
        patch=patch_size,
        needs=dict(needs or {}),
    )


def _forward_only_methods() -> list[str]:
    """The registered methods that run without gradients (the method registry's list)."""
    return forward_only_methods()


def format_duration(seconds: float) -> str:
    s = float(seconds)
    if s < 90:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.1f} min"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def parse_duration(text: str) -> float:
    """``"20m"``, ``"1.5h"``, ``"90s"``, ``"600"`` (seconds), ``"1h30m"`` → seconds."""
    import re

    t = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", t):
        value = float(t)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*(d|h|min|m|s)", t)
        if not parts or re.sub(r"(\d+(?:\.\d+)?)\s*(d|h|min|m|s)", "", t).strip():
            raise ValueError(f"not a duration: {text!r} (examples: 90s, 20m, 1.5h, 1h30m)")
        unit = {"d": 86400, "h": 3600, "min": 60, "m": 60, "s": 1}
        value = sum(float(v) * unit[u] for v, u in parts)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"a duration must be > 0, got {text!r}")
    return value


def format_plan(plan: AuditPlan) -> str:
    """The plan as a short text table (printed before any long work)."""
    tp = plan.throughput
    fb = "forward-only" if tp["fb_cost"] is None else f"forward+backward = {tp['fb_cost']:.2f} forward passes"
    lines = [
        f"audit plan — {plan.model} on {plan.dataset} ({plan.available_images} images, {plan.num_features} features "
        "each)",
        f"  probe: {tp['forwards_per_s']:,.0f} images/s raw forward (batch {tp['batch_size']}, {tp['layout']}); {fb}",
        "",
        f"  {'method':<24} {'forward-equiv./image':>21} {'est. per image':>15} {'images in budget':>17}  faithfulness",
    ]
    for r in plan.rows:
        eq = "–" if r.forward_equivalents is None else f"{r.forward_equivalents:,.0f}"
        sec = "–" if r.seconds_per_image is None else format_duration(r.seconds_per_image)
        fit = "–" if r.images_in_budget is None else str(r.images_in_budget)
        mark = "→" if r.method == plan.method else " "
        lines.append(
            f"{mark} {method_label(r.method):<24} {eq:>21} {sec:>15} {fit:>17}  {r.faithfulness}"
            + (f" [{r.note}]" if r.note else "")
        )
    if plan.patch != 1:
        lines.insert(2, f"  features: {plan.patch}×{plan.patch}-pixel patches ({plan.num_features} per image)")
    total = "unknown" if plan.total_seconds is None else format_duration(plan.total_seconds)
    budget = "" if plan.budget_seconds is None else f" of a {format_duration(plan.budget_seconds)} budget"
    lines += [
        "",
        f"  chosen: {method_label(plan.method)} on {plan.images} image(s) — {plan.reason}",
        f"  estimated time: {total}{budget} (job "
        f"{'unknown' if plan.job_seconds is None else format_duration(plan.job_seconds)}, evaluation and report about "
        f"{format_duration(REPORT_SECONDS)})",
    ]
    needs = plan.needs or {}
    if needs:
        lines.append(
            f"  the verdict needs about {needs['subsets']} images to separate own 5% subsets from random 5% subsets "
            f"and {needs['sis']} for a SIS-size interval of ±1 point ({needs['assumptions']})"
        )
        short = [
            what
            for what, k in (("the subset comparison", "subsets"), ("±1 point SIS", "sis"))
            if plan.images < needs[k]
        ]
        if short and plan.budget_seconds is not None:
            lines.append(
                f"  WARNING: the budget buys {plan.images} image(s), fewer than {' and '.join(short)} needs: "
                "a larger budget gives a firmer verdict (a rerun with one continues this audit)"
            )
    return "\n".join(lines)


def _plan_key(args: dict[str, Any]) -> dict[str, Any]:
    return {k: args[k] for k in sorted(args)}


# ---------------------------------------------------------------------------------------------
# the sample


def stratified_order(labels: Tensor | None, n: int, seed: int = 0) -> list[int]:
    """All ``n`` dataset positions in a seeded order whose every prefix is stratified by class.

    Each class's positions are shuffled (``seed``) and image ``r`` of a class of ``n_c`` gets the
    key ``(r + u_c) / n_c`` (``u_c`` a seeded offset per class); sorting by the key interleaves the
    classes in proportion to their sizes, so the first ``m`` positions hold each class about
    ``m·n_c/n`` times (within one), and a larger ``m`` extends the sample instead of changing it.
    Without labels (``None`` or negative): a seeded shuffle.
    """
    g = torch.Generator().manual_seed(int(seed))
    if labels is None or labels.numel() != n or bool((labels < 0).any()):
        return torch.randperm(n, generator=g).tolist()
    y = labels.to(torch.int64).cpu()
    keys = torch.empty(n, dtype=torch.float64)
    classes = torch.unique(y).tolist()
    offsets = torch.rand(len(classes), generator=g, dtype=torch.float64)
    for c, u in zip(classes, offsets.tolist()):
        idx = (y == c).nonzero().flatten()
        perm = idx[torch.randperm(len(idx), generator=g)]
        keys[perm] = (torch.arange(len(idx), dtype=torch.float64) + u) / len(idx)
    return sorted(range(n), key=lambda i: (float(keys[i]), i))


def images_needed(
    accuracy: float | None,
    num_classes: int,
    *,
    sis_spread: float = SIS_SPREAD,
    half_width: float = 0.01,
) -> dict[str, Any]:
    """How many images the verdict needs.

    * ``subsets``: to separate accuracy on the model's own 5% subsets from accuracy on random
      5% subsets (two-sided 5% test, 80% power, two proportions), assuming - conservatively -
      that own subsets keep the full-image accuracy ``a`` and random ones fall only halfway to
      chance ``1/K`` (the paper finds them at chance): ``n = (z_.975 + z_.8)² (p₁q₁ + p₂q₂) / d²``;
    * ``sis``: for a 95% interval of ± ``half_width`` on the mean SIS size, assuming a spread
      (standard deviation) of ``sis_spread`` of the image: ``n = (1.96 · sd / half_width)²``.
    ``accuracy`` ``None`` (unlabelled): agreement with the full-image prediction, 1 by construction.
    """
    chance = 1.0 / max(num_classes, 2)
    p1 = 0.98 if accuracy is None else min(max(float(accuracy), chance + 0.02), 0.98)
    d = (p1 - chance) / 2
    p2 = p1 - d
    subsets = math.ceil((1.959964 + 0.841621) ** 2 * (p1 * (1 - p1) + p2 * (1 - p2)) / d**2)
    sis = math.ceil((1.959964 * sis_spread / half_width) ** 2)
    return {
        "subsets": int(subsets),
        "sis": int(sis),
        "assumptions": (
            f"own 5% subsets at {100 * p1:.0f}% vs random at {100 * p2:.0f}% or less (chance {100 * chance:.0f}%); "
            f"SIS sizes spread {100 * sis_spread:.0f} points, interval ±{100 * half_width:.0f} point"
        ),
    }


# ---------------------------------------------------------------------------------------------
# the capped job


class _Capped:
    """An executor that runs shards one by one until ``deadline`` (``time.perf_counter()``), the
    estimate revised after the first computed shard and printed with an ETA."""

    def __init__(self, inner: Any, deadline: float, per_image: float | None, log: Callable[[str], None]) -> None:
        self.inner = inner
        self.name = getattr(inner, "name", "local")
        self.shows_shard_progress = getattr(inner, "shows_shard_progress", False)
        self.deadline = deadline
        self.per_image = per_image
        self.log = log
        self.stopped: int = 0
        self.revised: float | None = None

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "capped": True}

    def map(self, fn: Any, items: Any, on_result: Any) -> None:
        self.inner.map(fn, items, on_result)

    def run(self, tasks: Sequence[Any], on_result: Callable[[Any], None]) -> None:
        from overinterp.jobs import JobSpec

        computed_images, computed_s = 0, 0.0
        for k, task in enumerate(tasks):
            spec = JobSpec.from_dict(task.spec)
            size = len(spec.shard_positions(task.shard))
            left = self.deadline - time.perf_counter()
            per = self.revised or self.per_image
            if left <= 0 or (per is not None and per * size > left):
                self.stopped = len(tasks) - k
                self.log(
                    f"audit: budget spent - stopping with {self.stopped} shard(s) to go (kept for a rerun with a "
                    "larger budget)"
                )
                return
            results: list[Any] = []
            t = time.perf_counter()
            self.inner.run([task], results.append)
            for r in results:
                on_result(r)
                if not r.skipped:
                    computed_images += r.images
                    computed_s += time.perf_counter() - t
            if computed_images and (self.revised is None or k < 3):
                first = self.revised is None
                self.revised = computed_s / computed_images
                left = max(0.0, self.deadline - time.perf_counter())
                fit = int(left // self.revised)
                eta = time.strftime("%H:%M:%S", time.localtime(time.time() + left))
                if first:
                    self.log(
                        f"audit: first shard {computed_images} image(s) in {computed_s:.1f} s - revised estimate "
                        f"{format_duration(self.revised)} per image (plan: "
                        f"{'unknown' if self.per_image is None else format_duration(self.per_image)}); about {fit} "
                        f"more image(s) fit the budget; ETA {eta} ({format_duration(left)} left)"
                    )


# ---------------------------------------------------------------------------------------------
# models and images as users have them


class _LogitsOf(nn.Module):
    """A module whose forward returns a mapping with ``logits`` or an object with ``.logits``
    (Hugging Face ``transformers`` image classifiers) as a module returning the logits tensor."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.name = type(module).__name__

    def forward(self, x: Tensor) -> Tensor:
        return _logits_of(self.module(x))


def _logits_of(out: Any) -> Any:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    return out


def as_audit_model(module: nn.Module, image_shape: Sequence[int]) -> nn.Module:
    """``module`` in eval mode; wrapped by :class:`_LogitsOf` when its forward returns a mapping or
    an object with ``.logits`` (or a tuple whose first entry is the logits)."""
    module.eval()
    with torch.inference_mode():
        out = module(torch.zeros((1, *image_shape), dtype=_float_dtype(module)))
    return module if isinstance(out, Tensor) else _LogitsOf(module).eval()


def _float_dtype(module: nn.Module) -> torch.dtype:
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def _as_images(data: Any, labels: Any) -> Any:
    """A tensor (with ``labels`` or not) as :class:`LabeledImages` (uint8; unlabelled: ``-1``)."""
    from overinterp.data.base import LabeledImages

    if isinstance(data, LabeledImages):
        return data
    x = torch.as_tensor(data)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise UserInputError(f"images must be a tensor (N, C, H, W) with C = 1 or 3, got {tuple(x.shape)}")
    if x.is_floating_point():
        if not bool(torch.isfinite(x).all()):
            raise UserInputError("images hold NaN or infinite pixels")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise UserInputError(
                f"float images must be pixels in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); give the model its "
                "normalisation instead (a Classifier with preprocessing, or preprocessing= in the spec)"
            )
        x = (x * 255).round().to(torch.uint8)  # the audit stores 8-bit pixels, as every dataset
    elif x.dtype != torch.uint8:
        raise UserInputError(f"images must be uint8 or float pixels in [0, 1], got {x.dtype}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    n = int(x.shape[0])
    if labels is None:
        y = torch.full((n,), -1, dtype=torch.int64)
    else:
        y = torch.as_tensor(labels).to(torch.int64).flatten()
        if y.numel() != n:
            raise UserInputError(f"{n} images but {y.numel()} labels")
    meta = {"unlabelled": labels is None, "key": "tensor"}
    return LabeledImages(x.contiguous(), y, None, "tensor", "memory", meta)


def _images_npz(images: Any, labels: Any, classes: Any) -> tuple[dict[str, Any], bytes]:
    """The audit's images file format: ``images`` NHWC in their own dtype (uint8, or floats in [0, 1]
    kept exactly), ``labels`` (-1 when ``None``: unlabelled), ``classes`` when known; its arrays and bytes."""
    import io

    import numpy as np

    x = images
    y = labels if labels is not None else torch.full((len(x),), -1, dtype=torch.long)
    arrays = {"images": x.permute(0, 2, 3, 1).contiguous().numpy(), "labels": y.numpy()}
    if classes:
        arrays["classes"] = np.array(list(classes))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return arrays, buf.getvalue()


def _write_images(data: Any, path: Path) -> str:
    """``data`` as ``path`` (:func:`_images_npz`), written once; the dataset spec."""
    import numpy as np

    arrays, blob = _images_npz(data.images, data.labels, data.classes)
    if path.is_file():
        old = np.load(path)
        same = np.array_equal(old["images"], arrays["images"]) and np.array_equal(old["labels"], arrays["labels"])
        if not same:
            raise UserInputError(
                f"{path.parent.parent} holds an audit of other images: choose a new out folder to audit these"
            )
        return str(path)
    from overinterp._atomic import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, blob)
    return str(path)


# ---------------------------------------------------------------------------------------------
# evaluation and verdict


def _subset_pixels(images: Tensor, keep: Tensor, fill: Tensor, kind: str) -> Tensor:
    x = torch.ones_like(images, dtype=torch.float32) if kind == "mask" else images.float() / 255.0
    fill = (
        torch.zeros_like(x[0])
        if kind == "mask"
        else fill.float().view(-1, 1, 1).expand_as(x[0])
        if (fill.dim() <= 1)
        else fill.float()
    )
    return torch.where(keep, x, fill.unsqueeze(0))


def evaluate_audit(
    model: nn.Module,
    trace: Any,
    images: Tensor,
    positions: Tensor,
    labels: Tensor | None,
    *,
    fraction: float = 0.05,
    seed: int | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """The audit's numbers for the finished images: accuracy (``labels``; else agreement with the
    full-image prediction) on full images and on the ``bs``, ``random`` and ``mask`` 5% subsets
    (Wilson intervals), the confidence drop per subset kind and SIS sizes at :data:`THRESHOLDS`
    (bootstrap intervals inside [0, 1]; "too few" under 5 images), each with its ``n``."""
    from overinterp.analysis.sis_size import sis_fraction_matrix
    from overinterp.analysis.stats import bounded_mean_ci, wilson_ci
    from overinterp.data.subsets import random_keep_masks, random_subset_seed
    from overinterp.models.predict import predict_logits

    n = int(images.shape[0])
    full = predict_logits(model, images, batch_size=batch_size).float().softmax(1)
    pred = full.argmax(1)
    truth = labels if labels is not None else pred
    feats = trace.features if trace.features is not None and trace.features.dim() == 2 else None
    masks = {
        "bs5": trace.keep_mask(fraction),
        "random5": random_keep_masks(
            positions, tuple(trace.image_shape), fraction, random_subset_seed("test", seed), feats
        ),
    }
    masks["mask5"] = masks["bs5"]
    fill = trace.baseline.float().cpu()

    def prop(k: int, m: int) -> dict[str, Any]:
        ci = wilson_ci(k, m)
        return {"value": ci.value, "low": ci.low, "high": ci.high, "k": k, "n": m}

    def mean(values: Tensor) -> dict[str, Any]:
        ci = bounded_mean_ci(values)
        return {"value": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n}

    conf_full = full.gather(1, pred[:, None]).squeeze(1)
    out: dict[str, Any] = {
        "labelled": labels is not None,
        "images": n,
        "accuracy": {"full": prop(int((pred == truth).sum()), n)},
        "confidence": {"full": mean(conf_full.double())},
        "confidence_drop": {},
        "examples": {},
    }
    for kind, keep in masks.items():
        x = _subset_pixels(images, keep, fill, kind[:-1] if kind != "mask5" else "mask")
        probs = predict_logits(model, x, batch_size=batch_size).float().softmax(1)
        out["accuracy"][kind] = prop(int((probs.argmax(1) == truth).sum()), n)
        sub_conf = probs.gather(1, pred[:, None]).squeeze(1)
        out["confidence"][kind] = mean(sub_conf.double())
        drop = (conf_full - sub_conf).double()
        out["confidence_drop"][kind] = mean(drop.clamp(-1, 1))
        if kind == "bs5":
            out["examples"] = {
                "confidence": sub_conf.tolist(),
                "predicted": probs.argmax(1).tolist(),
                "full_predicted": pred.tolist(),
                "full_confidence": conf_full.tolist(),
            }
    fr = sis_fraction_matrix(trace, THRESHOLDS)
    out["sis"] = {}
    for t, f in zip(THRESHOLDS, fr):
        ok = f[~torch.isnan(f)]
        out["sis"][f"{t:g}"] = {**mean(ok), "reach": prop(int(len(ok)), n)}
    curve_ts = [round(0.5 + 0.01 * k, 2) for k in range(50)] + [0.995, 0.999]
    fc = sis_fraction_matrix(trace, curve_ts)
    out["sis_curve"] = [{"threshold": t, **mean(f[~torch.isnan(f)])} for t, f in zip(curve_ts, fc)]
    return out


#: images of the sample a recommended method check runs exact on (``check-method --images``)
CHECK_METHOD_IMAGES = 8


def screening_summary(
    trace: Any,
    positions: Sequence[int],
    *,
    command: str | None = None,
    python: str | None = None,
    checked: Sequence[int] | None = None,
) -> dict[str, Any] | None:
    """The audit's record of how sure a gradient-screened method (``fast``) was, image by image
    (:func:`~overinterp.analysis.faithfulness.screening_report` of ``trace``, whose images sit at
    dataset ``positions``); ``None`` when the method does not screen.

    ``per_image``: for each image in the trace's order, its ``position``, ``share`` (of its screened
    steps, those whose exact best came from the screen's bottom quarter or from outside it;
    ``None`` without screened steps), ``steps`` and ``bottom_quarter_steps``. Summary: ``images``
    (with screened steps), ``mean_share``, ``max_share`` (``None`` when no image has screened steps),
    ``flagged`` (images with a share of at least ``threshold``,
    :data:`~overinterp.analysis.faithfulness.UNSURE_SHARE`) and its ``rationale``; the ``caveat`` (the
    share does not say where the method went wrong); ``command``, the ``check-method`` command line
    that measures it (or ``python``, the call, for a model living in a Python session) and the
    ``recommendation`` in words; ``checked``: the dataset positions the command checks (the images
    whose screens were least sure, :func:`least_sure`). Strict JSON: no NaN.
    """
    from overinterp.analysis.faithfulness import SCREENING_CAVEAT, UNSURE_RATIONALE, screening_report

    rep = screening_report(trace)
    if rep is None:
        return None
    pos = [int(p) for p in positions]
    if len(pos) != len(rep["share"]):
        raise ValueError(f"{len(pos)} positions for a screening diagnostic of {len(rep['share'])} images")

    def num(v: float) -> float | None:
        return None if math.isnan(v) else float(v)

    per = [
        {"position": p, "share": num(s), "steps": int(n), "bottom_quarter_steps": int(b)}
        for p, s, n, b in zip(pos, rep["share"], rep["steps"], rep["bottom_quarter_steps"])
    ]
    seen = sum(1 for r in per if r["share"] is not None)
    flagged = len(rep["flagged"])
    method = str(trace.method.get("name", "the method")) if isinstance(trace.method, Mapping) else "the method"
    pct = f"{100 * rep['flag_share']:.0f}%"
    how = f": {command}" if command is not None else f" in Python: {python}"
    if flagged:
        said = (
            f"The gradient screen of {method} was unsure on {flagged} of {seen} images (exact's best came from the "
            f"bottom quarter of the screen on {pct} of the steps or more). That does not say {method} went wrong "
            "there"
        )
    else:
        said = (
            f"The gradient screen of {method} was sure on all {seen} images (exact's best came from the bottom "
            f"quarter of the screen on fewer than {pct} of the steps). That does not prove {method} faithful here"
        )
    return {
        "method": method,
        "threshold": rep["flag_share"],
        "rationale": UNSURE_RATIONALE,
        "caveat": SCREENING_CAVEAT,
        "images": seen,
        "mean_share": num(rep["mean_share"]),
        "max_share": num(rep["max_share"]),
        "flagged": flagged,
        "per_image": per,
        "command": command,
        "python": python if command is None else None,
        "checked": None if checked is None else [int(p) for p in checked],
        "recommendation": f"{said}; to measure how far {method} stays from exact on this model"
        + (
            f", on the {len(checked)} audited images whose screens were least sure (positions "
            f"{', '.join(str(int(p)) for p in checked)})"
            if checked
            else ""
        )
        + f", run{how}",
    }


#: the images ``check-method`` is recommended on, written into the audit folder's ``inputs/``
CHECK_FILE = "check-images.npz"


def least_sure(trace: Any, count: int = CHECK_METHOD_IMAGES) -> list[int]:
    """Rows of ``trace`` (at most ``count``) whose gradient screen was least sure, the highest share of
    bottom-quarter picks first (ties: trace order); ``[]`` when the method screens nothing."""
    from overinterp.analysis.faithfulness import screening_report

    rep = screening_report(trace)
    if rep is None:
        return []
    shares = [-1.0 if math.isnan(v) else v for v in rep["share"]]
    return sorted(range(len(shares)), key=lambda i: (-shares[i], i))[:count]


def _write_check_images(images: Any, labels: Any, data: Any, path: Path) -> str:
    """The images to check as ``path`` (:func:`_images_npz`), replaced atomically; its path."""
    from overinterp._atomic import atomic_write_bytes

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(
        path, _images_npz(images, None if labels is None else labels.long(), getattr(data, "classes", None))[1]
    )
    return str(path)


def _check_commands(
    spec_text: str | None,
    dataset: str,
    method: Mapping[str, Any],
    patch: int,
    device: str,
    positions: Sequence[int] | None = None,
) -> tuple[str | None, str | None]:
    """``(command, python)``: the ``check-method`` command line for a model with a spec string (on
    ``dataset``, all its images when ``positions`` are given: the audit's file of the images to
    check), else the Python call that runs the same check on the model object (on ``images`` at
    ``positions``, or its first images)."""
    from overinterp.experiments.check_method import check_command
    from overinterp.sis.methods import method_classes, method_from_description

    method = method_from_description(method).describe()  # parameters a recorded plan lacks: as it ran
    n = len(positions) if positions else CHECK_METHOD_IMAGES
    if spec_text is not None:
        data = str(Path(dataset).resolve()) if Path(dataset).exists() else dataset
        return check_command(spec_text, data, method, images=n, patch=patch, device=device), None

    params = method.get("params") or {}
    shown = "".join(
        f", {s.name}={params[s.name]!r}"
        for s in method_classes()[method["name"]].param_specs()
        if params.get(s.name) is not None and not (s.has_default and params[s.name] == s.default)
    )
    rows = f"[{list(positions)}]" if positions else f"[:{CHECK_METHOD_IMAGES}]"
    call = (
        f"overinterp.experiments.check_method.check_method(model, images{rows}, "
        f"overinterp.make_method({method['name']!r}{shown})"
        + (f", features=overinterp.patch_features(images.shape[2], images.shape[3], {patch})" if patch != 1 else "")
        + ")"
    )
    return None, call


_STAT_KEYS = frozenset({"value", "low", "high"})


def record_json(record: dict[str, Any]) -> str:
    """``record`` as strict JSON (``audit.json``): a missing statistic (NaN, inf) is written as ``null``,
    so any JSON reader takes the file (``NaN`` is not JSON)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(record), indent=1, default=str, allow_nan=False) + "\n"


def read_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``audit.json``: the ``null`` of a statistic cell (``value``/``low``/``high``) is NaN again."""

    def back(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: (math.nan if x is None and k in _STAT_KEYS else back(x)) for k, x in v.items()}
        if isinstance(v, list):
            return [back(x) for x in v]
        return v

    return back(json.loads(Path(path).read_text()))


def _pct(d: dict[str, Any], digits: int = 0) -> str:
    from overinterp.analysis.stats import MIN_VALUES, too_few

    if not d or d.get("n", 0) == 0:
        return "no images"
    v = 100 * d["value"]
    if d["low"] != d["low"]:
        return f"{v:.{digits}f}% ({too_few(d['n']) if d['n'] < MIN_VALUES else 'no interval'})"
    return f"{v:.{digits}f}% [{100 * d['low']:.{digits}f}, {100 * d['high']:.{digits}f}]"


def verdict(
    ev: dict[str, Any], *, model: str, dataset: str, needed: int | None = None, unit: str = "pixels"
) -> tuple[str, str]:
    """``(word, paragraph)``: the verdict on the evaluation ``ev`` of :func:`evaluate_audit`.

    ``overinterprets``: the Wilson interval of accuracy on the model's own 5% subsets lies above
    that on random 5% subsets and keeps at least half the full-image accuracy (the model
    decides confidently from 5% of the pixels it chose, which random 5% do not support);
    ``no evidence``: the intervals separate the other way, own subsets lose most of the
    accuracy (the upper end of their interval is under half the full-image accuracy), or the
    intervals overlap on at least ``needed`` images (random 5% do as well);
    ``undecided``: the intervals overlap on fewer images than ``needed``."""
    acc = ev["accuracy"]
    own, rnd, full = acc["bs5"], acc["random5"], acc["full"]
    what = "accuracy" if ev["labelled"] else "agreement with its prediction on the full image"
    n = ev["images"]
    if own["low"] > rnd["high"] and own["value"] >= 0.5 * full["value"]:
        word = "overinterprets"
        lead = (
            f"{model} overinterprets on {dataset}: shown only the 5% of {unit} it picked itself, it keeps "
            f"{_pct(own)} {what}, against {_pct(rnd)} on 5% random {unit}."
        )
    elif own["high"] < rnd["low"] or own["high"] < 0.5 * full["value"] or (needed is not None and n >= needed):
        word = "no evidence"
        lead = (
            f"No evidence that {model} overinterprets on {dataset}: on the 5% of {unit} it picked itself its "
            f"{what} is {_pct(own)}, against {_pct(rnd)} on 5% random {unit}."
        )
    else:
        word = "undecided"
        lead = (
            f"Undecided for {model} on {dataset}: {what} on its own 5% subsets ({_pct(own)}) and on 5% random "
            f"{unit} ({_pct(rnd)}) cannot be told apart on {n} image(s) - a larger budget decides."
        )
    drop = ev["confidence_drop"]["bs5"]
    s99 = ev["sis"].get("0.99", {})
    sis_txt = (
        f"The smallest pixel sets that keep its confidence at 0.99 cover {_pct(s99, 1)} of the image "
        f"(n = {s99.get('n', 0)} of {n} images reach 0.99)."
        if s99.get("n")
        else f"None of the {n} images reaches confidence 0.99 on the full image."
    )
    moves, sign = ("drops", 1) if drop["value"] >= 0 else ("rises", -1)  # the interval is of what the text says
    lo, hi = sorted((sign * 100 * drop["low"], sign * 100 * drop["high"]))
    conf = (
        f"Its confidence {moves} by {abs(100 * drop['value']):.1f} points on average from the full image to those 5% "
        + (
            f"[{lo:.1f}, {hi:.1f}]."
            if drop["low"] == drop["low"]
            else f"({drop['n']} images, too few for an interval)."
        )
    )
    base = f"On the full images: {_pct(full)} {what} ({n} images)."
    unknown = "" if ev["labelled"] else " The images carry no labels, so accuracy is unknown."
    return word, " ".join([lead, conf, sis_txt, base]) + unknown


@dataclass
class AuditResult:
    """What :func:`audit` found (``record``: the content of ``DIR/audit.json``).

    ``verdict`` (``overinterprets``, ``no evidence``, ``undecided``) and ``summary`` (the
    paragraph); ``evaluation``: the numbers (:func:`evaluate_audit`); ``planned_images`` /
    ``finished_images``; ``seconds`` per step; ``report``: the report's path (or ``None``).
    """

    out: Path
    record: dict[str, Any]

    @property
    def verdict(self) -> str:
        return self.record["verdict"]

    @property
    def summary(self) -> str:
        return self.record["summary"]

    @property
    def evaluation(self) -> dict[str, Any]:
        return self.record["evaluation"]

    @property
    def planned_images(self) -> int:
        return int(self.record["planned_images"])

    @property
    def finished_images(self) -> int:
        return int(self.record["finished_images"])

    @property
    def seconds(self) -> dict[str, float]:
        return self.record["seconds"]

    @property
    def report(self) -> Path | None:
        r = self.record.get("report")
        return None if r is None else Path(r)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the record as JSON to ``path`` (a folder gets ``audit.json``); returns the file."""
        p = Path(path)
        if p.is_dir() or not p.suffix:
            p.mkdir(parents=True, exist_ok=True)
            p = p / "audit.json"
        atomic_write_text(p, record_json(self.record))
        return p

    def __repr__(self) -> str:
        return f"AuditResult({self.verdict!r}, {self.finished_images} of {self.planned_images} images, out={self.out})"


# ---------------------------------------------------------------------------------------------
# the one call


def audit(
    model: Any,
    data: Any,
    *,
    labels: Any = None,
    budget: float | str | None = None,
    images: int | None = None,
    method: Any = None,
    out: str | os.PathLike[str] | None = None,
    patch: int | None = None,
    size: int | tuple[int, int] | None = None,
    seed: int = 0,
    force: bool = False,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int | None = None,
    probe_seconds: float = 3.0,
    executor: Any = None,
    progress: bool = True,
    report: Callable[[Path], Any] | None = None,
    log: Callable[[str], None] = print,
) -> AuditResult:
    """Audit ``model`` on ``data`` (see the module doc); returns an :class:`AuditResult`.

    Args:
        model: an ``nn.Module`` taking pixels in ``[0, 1]`` ``(B, C, H, W)`` (its forward may return
            logits, a mapping with ``logits`` or an object with ``.logits``), a
            :class:`~overinterp.Classifier`, a :class:`~overinterp.models.ModelSpec` or a model spec string.
        data: images ``(N, C, H, W)`` (uint8, or float pixels in ``[0, 1]``; ``labels`` ``(N,)`` or
            none), :class:`~overinterp.data.LabeledImages`, or a dataset spec (a path to an image
            folder, flat or with class sub-folders, works too).
        budget: wall-clock cap in seconds or a duration (``"5m"``); ``None``: every image.
        images: at most this many images of the sample.
        method: a backward-selection method (default: chosen by the plan).
        out: the audit folder (default: a new temporary folder; its path is in the result).
        patch: features of ``patch × patch`` pixels (default: chosen by the plan).
        size: the model's input size ``H`` or ``(H, W)`` that the images of a folder are resized and
            centre-cropped to (:func:`~overinterp.data.folder.fit_image`); default: the model file's
            own (its contract's ``size``), else the images stay as they are.
        seed: the sample's seed (the same seed and data: the same images, in the same order).
        force: audit even when the pipeline check fails (a warning instead of the error).
        report: called with the audit folder after the evaluation, returns the report's path.

    Raises:
        PipelineError: the model does not see the images as it should (see
            :func:`~overinterp.training.pipeline.check_pipeline`); nothing long ran.
        UserInputError: bad arguments, a budget too small for one image, or ``out`` holding
            another audit.
    """
    from overinterp.data.base import LabeledImages
    from overinterp.data.specs import open_dataset, parse_dataset, portable_spec
    from overinterp.jobs import JobSpec, load_job, run_job
    from overinterp.jobs.executors import LocalExecutor
    from overinterp.jobs.identity import describe_differences
    from overinterp.jobs.shard import provide_job_inputs
    from overinterp.models.spec import ModelSpec, parse_model_spec
    from overinterp.results import model_fingerprint
    from overinterp.sis.features import patch_features
    from overinterp.sis.methods import method_from_description
    from overinterp.training.pipeline import is_labelled, open_inputs, validate_pipeline

    t0 = time.perf_counter()
    budget_seconds = parse_duration(budget) if isinstance(budget, str) else budget
    if budget_seconds is not None and not budget_seconds > 0:
        raise UserInputError(f"budget must be > 0 seconds, got {budget}")
    if out is None:
        import tempfile

        out = tempfile.mkdtemp(prefix="overinterp-audit-")
        log(f"audit: writing to {out}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"out {out} is a file, not a folder")
    plan_file = out / "plan.json"
    if out.is_dir() and any(p.name != "inputs" for p in out.iterdir()) and not plan_file.is_file():
        raise UserInputError(f"out {out} exists and holds no audit (no plan.json): choose a new folder")
    if threads:
        torch.set_num_threads(int(threads))

    # -- the model: a spec string, a ModelSpec, or a module living in this process
    in_memory = isinstance(model, nn.Module)
    if isinstance(model, (str, os.PathLike)):
        model = parse_model_spec(model, trust_code=True)  # typed by the caller: an import: spec may run
    if isinstance(model, ModelSpec):
        spec: ModelSpec = model
        module = spec.load()
    elif in_memory:
        module = model
        spec = ModelSpec(
            name=f"python:{type(model).__name__}", label=getattr(model, "name", None) or type(model).__name__
        )
        if executor is not None and getattr(executor, "name", "local") != "local":
            raise UserInputError("a module that lives in this process is audited with the local executor only")
    else:
        raise UserInputError(f"model must be an nn.Module, a Classifier or a model spec, got {type(model).__name__}")
    if device != "cpu":
        module = module.to(device)

    # -- the images: a spec, or tensors/LabeledImages stored once in the audit folder
    fit = _input_size(module, size)
    if isinstance(data, (str, os.PathLike)):
        dataset = portable_spec(os.fspath(data))
        data_name = _short(dataset)
        parsed = parse_dataset(dataset)
        if parsed.kind == "registry" and parsed.name == "folder":  # photos as users have them: any sizes, flat too
            from overinterp.data.folder import load_image_folder

            opened = load_image_folder(str(parsed.root), parsed.split, size=fit)
            out.mkdir(parents=True, exist_ok=True)
            source = dataset
            dataset = _write_images(opened, out / "inputs" / "images.npz")
        else:
            opened = open_dataset(dataset)
            source = dataset
    else:
        data_name = "the given images"
        opened = data if isinstance(data, LabeledImages) else _as_images(data, labels)
        out.mkdir(parents=True, exist_ok=True)
        dataset = _write_images(opened, out / "inputs" / "images.npz")
        source = "tensor"
    c, h, w = (int(v) for v in opened.images.shape[1:])
    if in_memory:
        module = as_audit_model(module, (c, h, w))
    inputs = open_inputs(module, opened, device=device, where=f"dataset {data_name}")
    ds = inputs.data
    labelled = is_labelled(ds)
    n_avail = len(ds)
    order = stratified_order(ds.labels if labelled else None, n_avail, seed)
    cap = n_avail if images is None else min(int(images), n_avail)
    if images is not None and images < 1:
        raise UserInputError(f"images must be >= 1, got {images}")
    key = _plan_key(
        {
            "model": spec.to_dict() if not in_memory else {"module": type(model).__name__},
            "model_fingerprint": model_fingerprint(module),
            "dataset": source,
            "size": fit,
            "images": images,
            "method": None if method is None else method.describe(),
            "patch": patch,
            "seed": seed,
        }
    )
    # -- pipeline check on the first images of the sample, before any long work
    check_pos = order[:CHECK_IMAGES]  # the first images of the sample (all audited ones up to 200), forward only
    idx = torch.tensor(check_pos)
    check = validate_pipeline(
        module,
        ds.images[idx],
        ds.labels[idx] if labelled else None,
        where=f"{spec.display_name} on {data_name}",
        force=force,
    )
    log(
        f"audit: pipeline check on {check.n} images: "
        + (
            f"accuracy {100 * (check.accuracy or 0):.1f}% (chance {100 / check.num_classes:.1f}%)"
            if check.correct is not None
            else "no labels"
        )
        + f", most predicted class {check.top_class} ({100 * check.top_share:.0f}%)"
        + ("" if check.ok else " - FORCED past a failed check")
    )

    # -- plan (or the stored one)
    stored = None
    if plan_file.is_file():
        try:
            stored = json.loads(plan_file.read_text())
            plan_dict, stored_key = stored["plan"], stored["arguments"]
        except (OSError, ValueError, KeyError) as exc:
            raise UserInputError(f"{plan_file} is unreadable ({exc}); remove the folder to start afresh") from exc
        diff = describe_differences(stored_key, key, whose="this run's")
        if diff:
            raise UserInputError(
                f"{out} holds an audit with other arguments ({'; '.join(diff)}): rerun with the same arguments to "
                "resume, or choose a new out folder"
            )
        log(
            f"audit: resuming the plan in {plan_file} ({plan_dict['images']} images planned, method "
            f"{method_label(plan_dict['method'])}, patch {plan_dict.get('patch', 1)})"
        )
    else:
        log(f"audit: probing {spec.display_name} for {probe_seconds:g} s ...")
        tp = probe_throughput(module, (c, h, w), batch_size=batch_size or 64, seconds=probe_seconds, device=device)
        grid = {p: int(patch_features(h, w, p).max()) + 1 for p in _patch_candidates(h, w, patch)}
        plan = plan_audit(
            model_name=spec.display_name,
            dataset=data_name,
            num_features=grid,
            available_images=cap,
            throughput=tp,
            budget_seconds=budget_seconds,
            images=None,
            method=method,
            spent_seconds=time.perf_counter() - t0,
            needs=images_needed(check.accuracy, check.num_classes),
        )
        plan_dict = plan.to_dict()
        plan_dict["pipeline_check"] = {
            "n": check.n,
            "accuracy": check.accuracy,
            "p_value": check.p_value,
            "top_class": check.top_class,
            "top_share": check.top_share,
            "problem": check.problem,
            "forced": not check.ok,
        }
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(plan_file, json.dumps({"arguments": key, "plan": plan_dict}, indent=1) + "\n")
        log(format_plan(plan))
    p_size = int(plan_dict.get("patch", 1))
    positions = tuple(order[:cap])
    chosen = method_from_description(plan_dict["method"])
    per_image = plan_dict.get("seconds_per_image")
    job_budget = None
    if budget_seconds is not None:
        job_budget = max(1.0, budget_seconds - REPORT_SECONDS - (time.perf_counter() - t0))
    planned = int(plan_dict["images"])
    if stored is not None and job_budget is not None and per_image and (out / "job" / "manifest.json").is_file():
        from overinterp.jobs import job_status

        st = job_status(out / "job")  # a rerun: what this budget buys on top of the finished shards
        size = int(plan_dict.get("shard_size") or 1)
        done = sum(min(size, cap - size * k) for k in range(st["shards"]) if k not in set(st["missing"]))
        planned = min(cap, done + int(job_budget // per_image))
        log(f"audit: {done} image(s) finished before; this budget buys about {planned - done} more")
    # shards: about 1/25 of the budget's work (a minute at most), so the cap is met within a small shard
    target = 60.0 if job_budget is None else min(60.0, job_budget / 25)
    shard_size = int(plan_dict.get("shard_size") or max(1, min(100, int(target // max(per_image or 1.0, 1e-3)))))
    if "shard_size" not in plan_dict:
        plan_dict["shard_size"] = shard_size
        atomic_write_text(plan_file, json.dumps({"arguments": key, "plan": plan_dict}, indent=1) + "\n")
    job_spec = JobSpec(
        model=spec,
        dataset=dataset,
        positions=positions if budget_seconds is not None else positions[: int(plan_dict["images"])],
        method=chosen.describe(),
        patch=p_size,
        shard_size=shard_size,
        device=device,
        threads=threads,
        batch_size=batch_size,
    )
    provide_job_inputs(job_spec, model=module if in_memory else inputs.model if device == "cpu" else None, data=ds)
    timings: dict[str, float] = {"plan": time.perf_counter() - t0}
    t = time.perf_counter()
    inner = executor or LocalExecutor()
    run_exec = inner
    if job_budget is not None:
        run_exec = _Capped(inner, time.perf_counter() + job_budget, per_image, log)
    summary = run_job(job_spec, out / "job", run_exec, progress=progress, log=log)
    timings["job"] = time.perf_counter() - t
    t = time.perf_counter()
    job = load_job(out / "job", allow_partial=True)
    pos = job.positions
    imgs = ds.images[pos]
    ev = evaluate_audit(module, job.trace, imgs, pos, ds.labels[pos] if labelled else None, batch_size=256)
    needed = (plan_dict.get("needs") or {}).get("subsets")
    unit = "pixels" if p_size == 1 else f"{p_size}×{p_size}-pixel patches"
    word, paragraph = verdict(ev, model=spec.display_name, dataset=data_name, needed=needed, unit=unit)
    _write_results(out / "results.csv", ev, spec.display_name, model_fingerprint(module), data_name)
    rows = least_sure(job.trace)  # the images whose screens were least sure: the check runs exact on them
    check_data, checked = dataset, None
    if rows:
        checked = pos[rows].tolist()
        if not in_memory:
            check_data = _write_check_images(
                ds.images[pos[rows]], ds.labels[pos[rows]] if labelled else None, ds, out / "inputs" / CHECK_FILE
            )
    command, python = _check_commands(
        None if in_memory else spec.as_text(), check_data, plan_dict["method"], p_size, str(device), checked
    )
    screening = screening_summary(job.trace, pos.tolist(), command=command, python=python, checked=checked)
    timings["evaluation"] = time.perf_counter() - t
    previous = read_record(out / "audit.json") if (out / "audit.json").is_file() else {}
    if summary.get("computed") == 0 and previous.get("seconds") and previous.get("finished_images") == len(pos):
        timings = {**previous["seconds"], **{f"rerun_{k}": v for k, v in timings.items()}}
    record: dict[str, Any] = {
        "model": spec.display_name,
        "dataset": data_name,
        "dataset_spec": dataset,
        "plan": plan_dict,
        "planned_images": planned,
        "finished_images": int(len(pos)),
        "available_images": cap,
        "budget_seconds": budget_seconds,
        "job": summary,
        "evaluation": ev,
        "verdict": word,
        "summary": paragraph,
        "screening": screening,
        "positions": pos.tolist(),
        "seconds": timings,
        "estimated_seconds": plan_dict.get("total_seconds"),
        "report": None,
    }
    atomic_write_text(out / "audit.json", record_json(record))
    if report is not None:
        t = time.perf_counter()
        record["report"] = str(report(out))
        record["seconds"]["report"] = time.perf_counter() - t
    record["seconds"]["total"] = sum(
        v for k, v in record["seconds"].items() if k in ("plan", "job", "evaluation", "report")
    )
    atomic_write_text(out / "audit.json", record_json(record))
    return AuditResult(out, record)


def _input_size(module: Any, size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    """``size`` as ``(H, W)``, else the input size a model file declares (``contract["size"]``), else ``None``."""
    if size is not None:
        return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))
    declared = (getattr(module, "contract", None) or {}).get("size") or getattr(module, "input_size", None)
    return None if declared is None else (int(declared[0]), int(declared[1]))


def _short(dataset: str) -> str:
    """A dataset's short name: ``cifar10:test``, ``photos``, ``cifar10-lossless.npz:test``."""
    from overinterp.data.specs import parse_dataset

    try:
        spec = parse_dataset(dataset)
    except (ValueError, FileNotFoundError):
        return Path(dataset).name
    if spec.kind == "registry" and spec.name == "folder":
        return Path(str(spec.root)).name + (f":{spec.split}" if spec.split else "")
    if spec.kind == "registry":
        return spec.key
    name = Path(str(spec.path)).name
    if name == "images.npz" and Path(str(spec.path)).parent.name == "inputs":
        return "the given images"
    return name + (f":{spec.prefix}" if spec.prefix else "")


def _patch_candidates(h: int, w: int, patch: int | None) -> list[int]:
    """Patch sizes the plan may choose from (fine to coarse): ``[patch]`` when given; 1 for
    images up to 64×64; else the sizes that give 16 to 4,096 features."""
    if patch is not None:
        return [int(patch)]
    if h * w <= 64 * 64:
        return [1]
    sizes = [p for p in (2, 4, 7, 8, 14, 16, 28, 32, 56) if 16 <= math.ceil(h / p) * math.ceil(w / p) <= 4096]
    return sizes or [max(1, min(h, w) // 16)]


def _write_results(path: Path, ev: dict[str, Any], model: str, fingerprint: str, dataset: str) -> None:
    """The audit's rows of the long-format results file (the file is replaced: one audit, one record)."""
    from overinterp.results import append_results

    base = {"experiment": "audit", "model": model, "fingerprint": fingerprint, "train_on": "full", "dataset": dataset}
    rows = []
    for kind, d in ev["accuracy"].items():
        metric = "accuracy" if ev["labelled"] else "agreement"
        rows.append({**base, "evaluate_on": kind, "metric": metric, "value": d["value"], "n": d["n"]})
    for kind, d in ev["confidence_drop"].items():
        rows.append({**base, "evaluate_on": kind, "metric": "confidence_drop_mean", "value": d["value"], "n": d["n"]})
    for t, d in ev["sis"].items():
        if d["n"]:
            rows.append(
                {**base, "evaluate_on": "full", "metric": f"sis_fraction_mean@{t}", "value": d["value"], "n": d["n"]}
            )
        rows.append(
            {
                **base,
                "evaluate_on": "full",
                "metric": f"with_sis@{t}",
                "value": d["reach"]["value"],
                "n": d["reach"]["n"],
            }
        )
    scratch = path.with_name(f".{path.name}.tmp")
    scratch.unlink(missing_ok=True)
    append_results(scratch, rows)
    os.replace(scratch, path)


def run_audit(
    model_spec: Any,
    dataset: str,
    out_dir: str | os.PathLike[str],
    *,
    budget_seconds: float | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """The former entry point: :func:`audit` with a model spec and a dataset spec; returns the record."""
    return audit(model_spec, dataset, out=out_dir, budget=budget_seconds, **kwargs).record
