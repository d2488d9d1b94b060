"""One call from a model and a dataset to the overinterpretation report.

:func:`run_audit` (``overinterp audit MODEL DATA --out DIR``):

1. **probe** — a few seconds of the model's raw forward throughput at the
   engine's batch size and layout, and the cost of a forward+backward pass in
   forward passes (``None`` for forward-only models);
2. **plan** — each candidate method's passes per image from its
   ``planned_cost`` (pinned to the passes it makes by tests), the estimated time
   per image, and how many images a ``budget`` buys with it; with a budget the
   most faithful method that fits at least :data:`MIN_IMAGES` images (fewer when
   the dataset is smaller) is chosen, else the faithful one that fits the most,
   and an :data:`UNFAITHFUL` one only when no faithful one fits one image.
   The plan is printed and written to ``DIR/plan.json`` *before* any long work;
3. **job** — the resumable, identity-checked dataset job in ``DIR/job``;
4. **evaluation** — the model on its own 5 % backward-selection and random
   subsets with the confidence drop, and SIS sizes at :data:`THRESHOLDS`, as
   rows of ``DIR/results.csv`` (the one long-format results file);
5. **report** — ``DIR/report/report.html`` (``report=``: the command line passes
   :func:`~overinterp.report.build_report`).

Rerunning with the same arguments resumes from the stored plan (the probe is
not repeated, so the job keeps its identity); other arguments on the same folder
are refused with the differences. ``DIR/audit.json`` records the estimate beside
the time each step took.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from overinterp._atomic import atomic_write_text
from overinterp.errors import UserInputError

__all__ = [
    "MIN_IMAGES",
    "THRESHOLDS",
    "LADDER",
    "Throughput",
    "AuditPlan",
    "probe_throughput",
    "plan_audit",
    "format_plan",
    "parse_duration",
    "run_audit",
    "PlanRow",
    "UNFAITHFUL",
    "FAITHFULNESS",
    "REPORT_SECONDS",
]

#: fewest images a budget should buy before a less faithful method is preferred (paired CIs need a few)
MIN_IMAGES = 16
#: SIS thresholds the audit records
THRESHOLDS = (0.9, 0.95, 0.99)
#: candidate methods, most faithful first (bench/results/frontier.md measures the order)
LADDER: tuple[tuple[str, dict[str, Any]], ...] = (
    ("exact", {}),
    ("fast", {}),
    ("adaptive", {}),
    ("gradient", {"k": 8}),
)
#: candidates known to be unfaithful: chosen by a budget only when no other fits one image
UNFAITHFUL = frozenset({"gradient"})
#: what the plan says about each candidate's faithfulness (bench/results/frontier.md, per pixel, CIFAR)
FAITHFULNESS = {
    "exact": "the reference",
    "fast": "≈ exact: 5% subsets and SIS within the frontier's targets at about 1% of its cost (32×32)",
    "adaptive": "close to exact, forward passes only",
    "gradient": "cheap, not faithful (5% subsets far less confident than exact's)",
}
#: seconds reserved for the subset evaluation and the report (measured: 10–40 s on 2 CPU cores)
REPORT_SECONDS = 45.0


@dataclass(frozen=True)
class Throughput:
    """Measured raw speed of a model on this machine.

    ``forwards_per_s``: images per second of plain forward passes at
    ``batch_size`` in ``layout``; ``fb_cost``: one forward+backward pass per image
    in forward passes (``None``: the model is forward-only).
    """

    forwards_per_s: float
    fb_cost: float | None
    batch_size: int
    layout: str
    seconds: float

    def image_seconds(self, cost: dict[str, int], efficiency: float = 0.92) -> float | None:
        """Seconds for one image of ``cost`` (``planned_cost``); ``efficiency``: the
        engine's candidate evaluations per second / raw forwards (0.92–0.97 measured)."""
        fb = int(cost.get("forward_backward", 0))
        if fb and self.fb_cost is None:
            return None
        equiv = int(cost.get("forward", 0)) + fb * (self.fb_cost or 0.0)
        return equiv / (self.forwards_per_s * efficiency)


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _timed(fn: Callable[[], Any], seconds: float, min_calls: int = 2) -> float:
    """Mean seconds per call of ``fn`` over at least ``min_calls`` calls and ``seconds``."""
    fn()  # warm-up (allocations, kernel choice)
    calls, start = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - start < seconds:
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls


def probe_throughput(
    model: nn.Module,
    image_shape: Sequence[int],
    *,
    batch_size: int = 64,
    seconds: float = 3.0,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Throughput:
    """Time ``model`` on random ``(batch_size, *image_shape)`` pixels in ``[0, 1]``.

    Forward passes run in the layout the engine uses (channels-last for float32
    conv nets); the forward+backward pass is timed with gradients w.r.t. the
    inputs, as gradient methods take them, and is ``None`` when the model cannot
    be differentiated (forward-only formats)."""
    if seconds <= 0:
        raise ValueError(f"probe seconds must be > 0, got {seconds}")
    start = time.perf_counter()
    dev = torch.device(device)
    x = torch.rand((batch_size, *image_shape), generator=torch.Generator().manual_seed(0), dtype=dtype).to(dev)
    layout = "channels_last" if dtype != torch.float64 and _has_conv(model) else "contiguous"
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with torch.inference_mode():
            model(x)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    t_fwd = _timed(forward, seconds * 0.6) / batch_size

    def forward_backward() -> None:
        xi = x.detach().requires_grad_(True)
        out = model(xi)
        out[:, 0].sum().backward()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    fb_cost: float | None
    if getattr(model, "supports_gradients", True) is False:  # ONNX, TFLite, black boxes
        return Throughput(1.0 / t_fwd, None, batch_size, layout, time.perf_counter() - start)
    try:
        with torch.enable_grad():
            t_fb = _timed(forward_backward, seconds * 0.4) / batch_size
        fb_cost = max(1.0, t_fb / t_fwd)
    except (RuntimeError, TypeError, NotImplementedError):  # forward-only (TFLite, ONNX, numpy) models
        fb_cost = None
    return Throughput(
        forwards_per_s=1.0 / t_fwd,
        fb_cost=fb_cost,
        batch_size=batch_size,
        layout=layout,
        seconds=time.perf_counter() - start,
    )


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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _method_label(desc: dict[str, Any]) -> str:
    params = desc.get("params") or {}
    from overinterp.sis.methods import make_method

    defaults = make_method(desc["name"]).params() if desc["name"] != "gradient" else {}
    shown = {k: v for k, v in params.items() if defaults.get(k, object()) != v and v is not None}
    if desc["name"] == "gradient":
        shown = {"k": params.get("k")}
    return desc["name"] + ("" if not shown else "(" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")")


def _row(method: Any, num_features: int, tp: Throughput, job_budget: float | None, cap: int) -> PlanRow:
    desc = method.describe()
    faith = FAITHFULNESS.get(desc["name"], "not measured by the frontier")
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
    num_features: int,
    available_images: int,
    throughput: Throughput,
    budget_seconds: float | None = None,
    images: int | None = None,
    method: Any = None,
    spent_seconds: float = 0.0,
) -> AuditPlan:
    """Choose the method and the number of images (see the module doc).

    ``images`` caps the count (default: the whole dataset); ``method`` fixes the
    method (its cost is still estimated); ``spent_seconds`` (the probe so far)
    comes out of the budget.

    Raises:
        UserInputError: the budget buys not even one image with any candidate, or
            a fixed method does not fit one image in the budget.
    """
    from overinterp.sis.methods import make_method

    if available_images < 1:
        raise UserInputError("the dataset has no images")
    if images is not None and images < 1:
        raise UserInputError(f"--images must be >= 1, got {images}")
    cap = min(available_images, images) if images is not None else available_images
    job_budget = None
    if budget_seconds is not None:
        if budget_seconds <= 0:
            raise UserInputError(f"the budget must be > 0 seconds, got {budget_seconds}")
        job_budget = max(0.0, budget_seconds - spent_seconds - REPORT_SECONDS)
    candidates = [make_method(n, **p) for n, p in LADDER]
    if method is not None and all(c.describe() != method.describe() for c in candidates):
        candidates.insert(0, method)
    rows = [_row(m, num_features, throughput, job_budget, cap) for m in candidates]
    want = min(cap, MIN_IMAGES)
    if method is not None:
        chosen = next(r for r in rows if r.method == method.describe())
        if chosen.note.startswith("needs gradients"):
            raise UserInputError(
                f"method {method.name} needs gradients but the model is forward-only; forward-only methods: "
                + ", ".join(n for n, p in LADDER if n not in ("fast", "gradient"))
                + ", kstep, screened"
            )
        n = cap if chosen.images_in_budget is None else chosen.images_in_budget
        reason = "method given with --method"
    elif job_budget is None:
        usable = [r for r in rows if r.seconds_per_image is not None and r.method["name"] not in UNFAITHFUL]
        chosen = next((r for r in usable if r.method["name"] == "fast"), None) or min(
            usable, key=lambda r: r.seconds_per_image or 0.0
        )
        n = cap
        reason = f"no budget given: the recommended method ({_method_label(chosen.method)}) on every image asked for"
    else:
        faithful = [r for r in rows if r.method["name"] not in UNFAITHFUL]
        fitting = [r for r in faithful if r.images_in_budget is not None and r.images_in_budget >= want]
        some = [r for r in faithful if r.images_in_budget]
        if fitting:
            chosen = fitting[0]
            skipped = [
                f"{_method_label(r.method)} fits {r.images_in_budget}"
                for r in rows[: rows.index(chosen)]
                if r.images_in_budget is not None
            ]
            reason = f"the most faithful method that fits {want} image(s)" + (
                f" ({'; '.join(skipped)})" if skipped else ""
            )
        elif some:
            chosen = max(some, key=lambda r: r.images_in_budget or 0)
            reason = (
                f"no faithful method fits {want} images: the one that fits the most (a larger --budget buys more; "
                "unfaithful methods are used only when no faithful one fits one image)"
            )
        else:
            cheap = [r for r in rows if r.images_in_budget]
            if not cheap:
                cheapest = min(
                    (r for r in rows if r.seconds_per_image is not None), key=lambda r: r.seconds_per_image or 0.0
                )
                raise UserInputError(
                    f"a budget of {_duration(budget_seconds or 0)} is too small for even one image: the cheapest "
                    f"method ({_method_label(cheapest.method)}) needs about "
                    f"{_duration(cheapest.seconds_per_image or 0)} per image plus about "
                    f"{_duration(REPORT_SECONDS + spent_seconds)} for the probe, evaluation and report"
                )
            chosen = max(cheap, key=lambda r: r.images_in_budget or 0)
            reason = "WARNING: no faithful method fits one image; this cheap one is not faithful (see FAITHFULNESS)"
        n = chosen.images_in_budget or 0
    if n < 1:
        raise UserInputError(
            f"method {_method_label(chosen.method)} needs about {_duration(chosen.seconds_per_image or 0)} per image:"
            f" not one image fits a budget of {_duration(budget_seconds or 0)}"
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
    )


def _duration(seconds: float) -> str:
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
        sec = "–" if r.seconds_per_image is None else _duration(r.seconds_per_image)
        fit = "–" if r.images_in_budget is None else str(r.images_in_budget)
        mark = "→" if r.method == plan.method else " "
        lines.append(
            f"{mark} {_method_label(r.method):<24} {eq:>21} {sec:>15} {fit:>17}  {r.faithfulness}"
            + (f" [{r.note}]" if r.note else "")
        )
    total = "unknown" if plan.total_seconds is None else _duration(plan.total_seconds)
    budget = "" if plan.budget_seconds is None else f" of a {_duration(plan.budget_seconds)} budget"
    lines += [
        "",
        f"  chosen: {_method_label(plan.method)} on {plan.images} image(s) — {plan.reason}",
        f"  estimated time: {total}{budget} (job "
        f"{'unknown' if plan.job_seconds is None else _duration(plan.job_seconds)}, evaluation and report about "
        f"{_duration(REPORT_SECONDS)})",
    ]
    return "\n".join(lines)


def _plan_key(args: dict[str, Any]) -> dict[str, Any]:
    return {k: args[k] for k in sorted(args)}


def _sis_rows(job: Any, thresholds: Sequence[float], base: dict[str, Any]) -> list[dict[str, Any]]:
    from overinterp.analysis.sis_size import sis_fraction_matrix

    trace = job.trace
    fr = sis_fraction_matrix(trace, thresholds)
    rows = []
    for t, f in zip(thresholds, fr):
        ok = f[~torch.isnan(f)]
        rows.append(
            {
                **base,
                "metric": f"sis_fraction_mean@{t:g}",
                "value": float(ok.mean()) if len(ok) else math.nan,
                "n": int(len(ok)),
                "notes": f"mean SIS size as a fraction of the image, τ = {t:g}",
            }
        )
        rows.append(
            {
                **base,
                "metric": f"with_sis@{t:g}",
                "value": float(len(ok)) / max(1, len(f)),
                "n": len(f),
                "notes": f"fraction of images whose full image reaches τ = {t:g}",
            }
        )
    return rows


def run_audit(
    model_spec: Any,
    dataset: str,
    out_dir: str | os.PathLike[str],
    *,
    budget_seconds: float | None = None,
    images: int | None = None,
    method: Any = None,
    patch: int = 1,
    device: str = "cpu",
    threads: int | None = None,
    batch_size: int | None = None,
    probe_seconds: float = 3.0,
    executor: Any = None,
    progress: bool = True,
    report: Callable[[Path], Any] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Plan, run (or resume) and report an audit (see the module doc); returns ``audit.json``'s content.

    Args:
        model_spec: a :class:`~overinterp.models.ModelSpec` (any format the spec syntax takes).
        dataset: a dataset spec (README: Model and dataset specs); images are taken
            from position 0 on.
        out_dir: the audit folder (created; an existing one must hold this audit).
        budget_seconds / images / method: see :func:`plan_audit`.
        patch: features of ``patch × patch`` pixels.
        report: called with the audit folder after the evaluation, returns the
            report's path — e.g. ``lambda d: build_report(d, d / "report").html_path``
            (:mod:`overinterp.report` sits above this layer; the command line passes it).
    """
    from overinterp.data.specs import open_dataset, portable_spec
    from overinterp.experiments.pixel_subsets import evaluate_subsets
    from overinterp.jobs import JobSpec, load_job, run_job
    from overinterp.jobs.job import describe_differences
    from overinterp.models.predict import check_labels, probe_model
    from overinterp.results import append_results, model_fingerprint, read_results
    from overinterp.sis.features import patch_features
    from overinterp.sis.methods import method_from_description

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out} is a file, not a folder")
    plan_file = out / "plan.json"
    if out.is_dir() and any(out.iterdir()) and not plan_file.is_file():
        raise UserInputError(f"--out {out} exists and holds no audit (no plan.json): choose a new folder")
    if threads:
        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    spec_dataset = portable_spec(dataset)
    data = open_dataset(spec_dataset)
    n_avail = len(data)
    c, h, w = (int(v) for v in data.images.shape[1:])
    num_features = h * w if patch == 1 else int(patch_features(h, w, patch).max()) + 1
    model = model_spec.load()
    if device != "cpu":
        model = model.to(device)
    num_classes = probe_model(model, (c, h, w), where=f"dataset {dataset}")
    key = _plan_key(
        {
            "model": model_spec.to_dict(),
            "dataset": spec_dataset,
            "budget_seconds": budget_seconds,
            "images": images,
            "method": None if method is None else method.describe(),
            "patch": patch,
        }
    )
    if plan_file.is_file():
        try:
            stored = json.loads(plan_file.read_text())
            plan_dict, stored_key = stored["plan"], stored["arguments"]
        except (OSError, ValueError, KeyError) as exc:
            raise UserInputError(f"{plan_file} is unreadable ({exc}); remove the folder to start afresh") from exc
        diff = describe_differences(stored_key, key)
        if diff:
            raise UserInputError(
                f"{out} holds an audit with other arguments ({'; '.join(diff)}): rerun with the same arguments to "
                "resume, or choose a new --out"
            )
        log(
            f"audit: resuming the plan in {plan_file} ({plan_dict['images']} images, method "
            f"{_method_label(plan_dict['method'])})"
        )
    else:
        log(f"audit: probing {model_spec.display_name} for {probe_seconds:g} s …")
        tp = probe_throughput(
            model,
            (c, h, w),
            batch_size=batch_size or 64,
            seconds=probe_seconds,
            device=device,
        )
        plan = plan_audit(
            model_name=model_spec.display_name,
            dataset=spec_dataset,
            num_features=num_features,
            available_images=n_avail,
            throughput=tp,
            budget_seconds=budget_seconds,
            images=images,
            method=method,
            spent_seconds=time.perf_counter() - t0,
        )
        plan_dict = plan.to_dict()
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(plan_file, json.dumps({"arguments": key, "plan": plan_dict}, indent=1) + "\n")
        log(format_plan(plan))
    n = int(plan_dict["images"])
    if n > n_avail:
        raise UserInputError(f"the plan in {plan_file} takes {n} images but {dataset} now has {n_avail}")
    positions = tuple(range(n))
    check_labels(data.labels[list(positions)], num_classes, f"dataset {dataset}")
    chosen = method_from_description(plan_dict["method"])
    per_shard = plan_dict.get("seconds_per_image") or 1.0
    shard_size = max(1, min(100, int(60.0 // per_shard)))  # about a minute of work per shard: little lost on a kill
    spec = JobSpec(
        model=model_spec,
        dataset=spec_dataset,
        positions=positions,
        method=chosen.describe(),
        patch=patch,
        shard_size=shard_size,
        device=device,
        threads=threads,
        batch_size=batch_size,
    )
    timings: dict[str, float] = {"plan": time.perf_counter() - t0}
    t = time.perf_counter()
    summary = run_job(spec, out / "job", executor, progress=progress)
    timings["job"] = time.perf_counter() - t
    t = time.perf_counter()
    job = load_job(out / "job")
    results = out / "results.csv"
    fp = model_fingerprint(job.load_model())
    previous = json.loads((out / "audit.json").read_text()) if (out / "audit.json").is_file() else {}
    done = results.is_file() and any(
        r.get("experiment") == "audit" and r.get("fingerprint") == fp for r in read_results(results)
    )
    if not done:  # every row in one atomic append: a kill leaves all of them or none, a rerun adds none twice
        scratch = out / ".audit-rows.csv"
        scratch.unlink(missing_ok=True)
        ev = evaluate_subsets(job, None, kinds=("full", "bs", "random"), results=scratch, experiment="audit")
        base = {
            "experiment": "audit",
            "model": job.model_name,
            "fingerprint": fp,
            "train_on": "full",
            "evaluate_on": "full",
            "dataset": spec_dataset,
        }
        rows = [
            {k: v for k, v in r.items() if k not in ("schema_version", "recorded_at")} for r in read_results(scratch)
        ]
        append_results(results, rows + _sis_rows(job, THRESHOLDS, base))
        scratch.unlink()
    else:
        ev = previous.get("evaluation") or {}
    timings["evaluation"] = time.perf_counter() - t
    rep_path = None
    if report is not None:
        t = time.perf_counter()
        rep_path = str(report(out))
        timings["report"] = time.perf_counter() - t
    if done and previous.get("seconds"):  # a rerun of a finished audit keeps the first run's record
        timings = {**previous["seconds"], **{f"rerun_{k}": v for k, v in timings.items()}}
    record = {
        "plan": plan_dict,
        "job": summary,
        "evaluation": ev,
        "evaluated": fp,
        "seconds": timings,
        "estimated_seconds": plan_dict.get("total_seconds"),
        "report": rep_path,
    }
    atomic_write_text(out / "audit.json", json.dumps(record, indent=1, default=str) + "\n")
    return record
