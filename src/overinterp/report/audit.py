"""The audit's own report, verdict first: ``DIR/report/index.html`` of an audit folder.

Top: the verdict in plain words and one small table (model, data, method and its measured
faithfulness, images audited of planned, budget and time spent; accuracy on full images, on the
model's own 5% backward-selection subsets, on 5% random subsets and on the mask alone, each with
its Wilson interval; the confidence drop; SIS size at τ = 0.9 and 0.99 with n). For a gradient-
screened method (``fast``), how sure its screen was on each image (``audit.json``'s
``screening``: the shares sorted, the images with the highest, and the ``check-method`` command
that measures the method against exact on this model). Then the pictures: the 5% subsets the
model is most confident on (image, kept pixels, class and confidence), where the kept pixels lie
(heatmap), SIS size against τ. Then the plan and the timing. Every interval lies inside its
quantity's range (:mod:`overinterp.analysis.stats`); cells with fewer than five values say "too
few images (n = 3)".

:func:`audit` is :func:`overinterp.experiments.audit.audit` with this report (what
``overinterp.audit(...)`` and ``overinterp audit`` run).
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import torch

from overinterp._atomic import atomic_write_text

__all__ = ["build_audit_report", "audit", "EXAMPLES", "SCREENING_ROWS"]

#: most-confident 5% subsets shown
EXAMPLES = 6


def audit(model: Any, data: Any, **kwargs: Any) -> Any:
    """:func:`overinterp.experiments.audit.audit` with the audit report (``report=False``: none)."""
    from overinterp.experiments.audit import audit as run

    rep = kwargs.pop("report", True)
    if rep is True:
        rep = build_audit_report
    return run(model, data, report=rep or None, **kwargs)


def _fmt(d: dict[str, Any] | None, *, digits: int = 1, points: bool = False) -> str:
    """``value [low, high]`` in percent (or points), or the words for too few values."""
    from overinterp.analysis.stats import MIN_VALUES, too_few

    if not d or not d.get("n"):
        return "no images"
    v, lo, hi = (100 * float(d[k]) for k in ("value", "low", "high"))
    unit = " points" if points else "%"
    if lo != lo:
        return f"{v:.{digits}f}{unit}, " + (too_few(int(d["n"])) if d["n"] < MIN_VALUES else "no interval")
    count = f"{d['k']}/{d['n']}" if "k" in d else f"n = {d['n']}"
    return f"{v:.{digits}f}{unit} [{lo:.{digits}f}, {hi:.{digits}f}] ({count})"


def _duration(seconds: float | None) -> str:
    from overinterp.experiments.audit import format_duration

    return "–" if seconds is None else format_duration(seconds)


def _figures(out: Path, rec: dict[str, Any], fig_dir: Path) -> list[tuple[str, str, str]]:
    """``(file, title, caption)`` of each figure written into ``fig_dir``."""
    from overinterp.analysis.heatmaps import location_frequency
    from overinterp.analysis.style import pyplot
    from overinterp.data.specs import open_dataset
    from overinterp.jobs import load_job

    plt = pyplot()
    figs: list[tuple[str, str, str]] = []
    job = load_job(out / "job", allow_partial=True)
    trace = job.trace
    ev = rec["evaluation"]
    data = open_dataset(rec["dataset_spec"])
    images = data.images[job.positions]
    keep = trace.keep_mask(0.05)
    classes = data.classes
    ex = ev.get("examples") or {}
    conf = torch.tensor(ex.get("confidence") or [0.0] * len(images))
    top = conf.argsort(descending=True)[:EXAMPLES].tolist()

    def name(k: int) -> str:
        return f"{classes[k]} ({k})" if classes and 0 <= k < len(classes) else f"class {k}"

    if top:
        fig, axes = plt.subplots(2, len(top), figsize=(2.1 * len(top), 5.0), squeeze=False)
        base = trace.baseline.float().cpu()
        for col, i in enumerate(top):
            x = images[i].float() / 255.0
            fill = base.view(-1, 1, 1).expand_as(x) if base.dim() <= 1 else base
            kept = torch.where(keep[i], x, 0.5 + 0.0 * fill)
            axes[0][col].imshow(x.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            axes[1][col].imshow(kept.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            pred, full_pred = int(ex["predicted"][i]), int(ex["full_predicted"][i])
            axes[0][col].set_title(f"{name(full_pred)}\np = {ex['full_confidence'][i]:.3f}", fontsize=8)
            other = "" if pred == full_pred else f"\n(predicts {name(pred)})"
            axes[1][col].set_title(f"5%: p = {ex['confidence'][i]:.3f}{other}", fontsize=8)
            for r in (0, 1):
                axes[r][col].set_xticks([])
                axes[r][col].set_yticks([])
        fig.tight_layout()
        fig.savefig(fig_dir / "examples.png", dpi=110)
        plt.close(fig)
        figs.append(
            (
                "examples.png",
                "The 5% subsets the model is most confident on",
                "Top: the image as the model sees it, with the class it predicts and its confidence p. Bottom: only "
                "the 5% of pixels its own backward selection kept (the rest grey) and the model's confidence in the "
                "same class (and its prediction when it changes). A human sees little in the bottom row; a model "
                "as sure of it overinterprets.",
            )
        )
    freq = location_frequency(keep)
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    im = ax.imshow((100 * freq).numpy(), cmap="magma", vmin=0)
    fig.colorbar(im, ax=ax, label="% of images keeping the pixel")
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(fig_dir / "heatmap.png", dpi=110)
    plt.close(fig)
    figs.append(
        (
            "heatmap.png",
            "Where the kept pixels lie",
            f"For each pixel, the share of the {len(images)} audited images whose own 5% subset keeps it. Kept pixels "
            "piling up at the border or in one spot, away from the objects, point at a shortcut.",
        )
    )
    curve = [c for c in ev.get("sis_curve", []) if c.get("n")]
    if curve:
        fig, ax = plt.subplots(figsize=(5.2, 3.4))
        ts = [c["threshold"] for c in curve]
        ax.plot(ts, [100 * c["value"] for c in curve], color="#1f4e79", label="mean SIS size")
        band = [c for c in curve if c["low"] == c["low"]]
        if band:
            ax.fill_between(
                [c["threshold"] for c in band],
                [100 * c["low"] for c in band],
                [100 * c["high"] for c in band],
                color="#1f4e79",
                alpha=0.2,
                linewidth=0,
                label="95% bootstrap interval",
            )
        ax.set_xlabel("confidence threshold τ")
        ax.set_ylabel("SIS size (% of the image)")
        ax.set_ylim(0, max(1.0, 105 * max(max(c["high"] for c in band) if band else 0, max(c["value"] for c in curve))))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(fig_dir / "sis-size.png", dpi=110)
        plt.close(fig)
        figs.append(
            (
                "sis-size.png",
                "SIS size against the confidence threshold",
                "The smallest pixel subset (sufficient input subset) that keeps the model's confidence at τ, as a "
                "share of the image, averaged over the images whose full image reaches τ (their number falls as τ "
                "rises). No band where fewer than 5 images reach τ.",
            )
        )
    return figs


#: images listed by name in the screening section (those with the highest shares)
SCREENING_ROWS = 8


def _screening_section(scr: dict[str, Any], fig_dir: Path) -> str:
    """The per-image screening diagnostic of a gradient-screened method (``audit.json``'s
    ``screening``): the summary in words, the shares sorted (``screening.png``), the images with the
    highest shares, and the check to run."""
    from overinterp.analysis.style import pyplot

    per = [r for r in scr["per_image"] if r["share"] is not None]
    per.sort(key=lambda r: (-r["share"], r["position"]))
    method, thr = html.escape(str(scr["method"])), float(scr["threshold"])
    parts = ["<h2>How sure the method was, image by image</h2>"]
    if not per:
        parts.append(f"<p>{method} screened no step of the audited images by gradient: nothing to show.</p>")
    else:
        parts.append(
            f"<p>At each screened step {method} ranks the candidates by gradient and scores only the top of that "
            "list exactly. Per image, the share of those steps whose exact best came from the bottom quarter of "
            f"the list (or from outside it): mean {100 * scr['mean_share']:.0f}%, highest "
            f"{100 * scr['max_share']:.0f}% over {scr['images']} images; <strong>{scr['flagged']} of "
            f"{scr['images']}</strong> at or above {100 * thr:.0f}% ({html.escape(scr['rationale'])}).</p>"
        )
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(5.2, 2.6))
        shares = [100 * r["share"] for r in per]
        colours = ["#a61b1b" if r["share"] >= thr else "#1f4e79" for r in per]
        ax.bar(range(1, len(per) + 1), shares, width=1.0 if len(per) > 60 else 0.8, color=colours, linewidth=0)
        ax.axhline(100 * thr, color="#444", linestyle="--", linewidth=1, label=f"{100 * thr:.0f}%: a random screen")
        ax.set_xlabel("audited images, sorted by share")
        ax.set_ylabel("share of steps (%)")
        ax.set_xlim(0.5, len(per) + 0.5)
        ax.set_ylim(0, max(100 * thr, max(shares)) * 1.15)
        ax.legend(fontsize=8, loc="upper right")
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(fig_dir / "screening.png", dpi=110)
        plt.close(fig)
        parts.append(
            '<figure><img src="screening.png" alt="screen shares per image"><figcaption>Each bar is one audited '
            "image: the share of its screened steps whose exact best came from the bottom quarter of the gradient "
            f"screen; red at or above {100 * thr:.0f}%.</figcaption></figure>"
        )
        rows = "".join(
            f"<tr><td>{r['position']}</td><td>{100 * r['share']:.0f}%</td><td>{r['bottom_quarter_steps']} of "
            f"{r['steps']}</td></tr>"
            for r in per[:SCREENING_ROWS]
        )
        parts.append(
            "<table><tr><th>image (dataset position)</th><th>share</th><th>steps from the bottom quarter</th></tr>"
            f"{rows}</table>"
        )
    text, cmd = str(scr["recommendation"]), scr.get("command") or scr.get("python")
    if cmd and text.endswith(f": {cmd}"):
        text = text[: -len(str(cmd)) - 1]
    parts.append(
        f'<p class="check"><strong>Check it:</strong> {html.escape(text)}'
        + (f"<br><code>{html.escape(str(cmd))}</code>" if cmd else "")
        + "</p>"
    )
    parts.append(
        f'<p style="font-size:.85rem;color:#555">Why not trust the share alone: {html.escape(scr["caveat"])}.</p>'
    )
    return "\n".join(parts)


def build_audit_report(out_dir: str | os.PathLike[str], report_dir: str | os.PathLike[str] | None = None) -> Path:
    """Write the audit report of the audit folder ``out_dir`` (its ``audit.json``, job and images) to
    ``report_dir`` (default ``out_dir/report``); returns ``index.html``'s path."""
    out = Path(out_dir)
    from overinterp.experiments.audit import read_record

    rec = read_record(out / "audit.json")
    rdir = Path(report_dir) if report_dir is not None else out / "report"
    rdir.mkdir(parents=True, exist_ok=True)
    ev = rec["evaluation"]
    plan = rec["plan"]
    from overinterp.experiments.audit import FAITHFULNESS, method_label

    what = "Accuracy" if ev["labelled"] else "Agreement with the full-image prediction"
    acc = ev["accuracy"]
    sis = ev["sis"]
    sec = rec.get("seconds") or {}
    spent = sum(v for k, v in sec.items() if k in ("plan", "job", "evaluation", "report"))
    budget = rec.get("budget_seconds")
    method = plan["method"]
    rows = [
        ("Model", html.escape(str(rec["model"]))),
        ("Data", html.escape(str(rec["dataset"])) + ("" if ev["labelled"] else " (no labels: accuracy unknown)")),
        (
            "Method",
            html.escape(method_label(method))
            + (f" over {plan.get('patch')}×{plan.get('patch')}-pixel patches" if plan.get("patch", 1) != 1 else "")
            + " — "
            + html.escape(FAITHFULNESS.get(method["name"], "not measured by the frontier")),
        ),
        (
            "Images audited",
            f"{rec['finished_images']} (the plan expected {rec['planned_images']}, of {rec['available_images']})",
        ),
        (
            "Budget and time spent",
            ("no budget" if budget is None else f"budget {_duration(budget)}")
            + f"; {_duration(spent)} spent up to this report ("
            + ", ".join(f"{k} {_duration(v)}" for k, v in sec.items() if k in ("plan", "job", "evaluation"))
            + ")",
        ),
        (f"{what}: full images", _fmt(acc["full"])),
        (f"{what}: the model's own 5% subsets", _fmt(acc["bs5"])),
        (f"{what}: 5% random subsets", _fmt(acc["random5"])),
        (f"{what}: the 5% mask alone", _fmt(acc["mask5"])),
        ("Confidence drop, full image → own 5% subset", _fmt(ev["confidence_drop"]["bs5"], points=True)),
        ("SIS size at τ = 0.9 (share of the image)", _fmt(sis.get("0.9"), digits=2)),
        ("SIS size at τ = 0.99 (share of the image)", _fmt(sis.get("0.99"), digits=2)),
    ]
    scr = rec.get("screening")
    if scr and scr.get("images"):
        rows[2] = (
            rows[2][0],
            rows[2][1] + f"; its gradient screen was unsure on {scr['flagged']} of {scr['images']} images (below)",
        )
    table = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows)
    fig_dir = rdir
    screening_html = _screening_section(scr, fig_dir) if scr else ""
    figs = _figures(out, rec, fig_dir)
    fig_html = "\n".join(
        f'<figure><h3>{html.escape(t)}</h3><img src="{f}" alt="{html.escape(t)}"><figcaption>{html.escape(c)}'
        "</figcaption></figure>"
        for f, t, c in figs
    )
    needs = plan.get("needs") or {}
    plan_rows = [
        ("Chosen", html.escape(plan.get("reason", ""))),
        ("Probe", f"{plan['throughput']['forwards_per_s']:,.0f} images/s raw forward"),
        ("Estimated time per image", _duration(plan.get("seconds_per_image"))),
        ("Estimated total", _duration(plan.get("total_seconds"))),
    ]
    if needs:
        plan_rows.append(
            (
                "Images the verdict needs",
                f"about {needs['subsets']} to separate own from random 5% subsets, {needs['sis']} for a ±1 point "
                f"SIS-size interval ({html.escape(needs['assumptions'])})",
            )
        )
    check = plan.get("pipeline_check") or {}
    if check:
        acc_txt = "no labels" if check.get("accuracy") is None else f"accuracy {100 * check['accuracy']:.1f}%"
        plan_rows.append(
            (
                "Pipeline check",
                f"{check['n']} images, {acc_txt}, most predicted class {check['top_class']} "
                f"({100 * check['top_share']:.0f}%)"
                + (f" — FAILED, forced: {html.escape(str(check['problem']))}" if check.get("forced") else " — passed"),
            )
        )
    plan_rows += [(f"Time: {k}", _duration(v)) for k, v in sec.items() if k != "total"]
    plan_table = "\n".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in plan_rows)
    word = rec["verdict"]
    colour = {"overinterprets": "#a61b1b", "no evidence": "#1b6e2a"}.get(word, "#8a6d00")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Audit: {html.escape(str(rec["model"]))}</title>
<style>
body {{ font-family: system-ui, -apple-system, Segoe UI, sans-serif; max-width: 60rem; margin: 2rem auto;
  padding: 0 1rem; color: #1a1a1a; line-height: 1.45; }}
h1 {{ font-size: 1.5rem; margin-bottom: .3rem; }}
.verdict {{ border-left: 6px solid {colour}; background: #f7f7f7; padding: .8rem 1rem; font-size: 1.05rem; }}
.verdict strong {{ color: {colour}; text-transform: uppercase; letter-spacing: .03em; }}
table {{ border-collapse: collapse; margin: 1rem 0; width: 100%; }}
th, td {{ text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; vertical-align: top; }}
th {{ width: 38%; font-weight: 600; }}
figure {{ margin: 1.5rem 0; }} figure img {{ max-width: 100%; }} figcaption {{ color: #444; font-size: .9rem; }}
h2 {{ margin-top: 2rem; border-bottom: 1px solid #ccc; }}
.check {{ border-left: 4px solid #1f4e79; background: #f3f6fa; padding: .6rem .9rem; }}
code {{ font-size: .85rem; word-break: break-all; }}
</style></head><body>
<h1>Does {html.escape(str(rec["model"]))} overinterpret?</h1>
<p class="verdict"><strong>{html.escape(word)}</strong> — {html.escape(rec["summary"])}</p>
<table>{table}</table>
<p style="font-size:.85rem;color:#555">Intervals: 95%, Wilson for shares of images, percentile bootstrap for means
(always inside their range; none for fewer than 5 images). The 5% subsets keep the 5% of pixels (or patches) removed
last by backward selection; the rest take the model's baseline value.</p>
{screening_html}
<h2>What the model looks at</h2>
{fig_html}
<h2>Plan and timing</h2>
<table>{plan_table}</table>
<p style="font-size:.85rem;color:#555">Folder: {html.escape(str(out))} (audit.json, plan.json, results.csv, job/).
Rerun the same audit with a larger budget to extend the sample.</p>
</body></html>
"""
    path = rdir / "index.html"
    atomic_write_text(path, page)
    return path
