"""Build the overinterpretation report of a run folder.

:func:`build_report` discovers the run's dataset jobs and results file, computes
every analysis from the stored traces (any threshold, no backward selection),
saves figures (PNG + SVG) and tables (CSV) and writes ``report.html`` (self-
contained) and ``summary.md``. Sections whose inputs are missing say which
command produces them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from overinterp._atomic import atomic_write_text
from overinterp.analysis import (
    DEFAULT_THRESHOLDS,
    MASK_STYLES,
    SCORE_THRESHOLD,
    compare_correct_incorrect,
    find_result,
    location_frequency,
    model_score,
    pick_examples,
    plot_ensemble_sis,
    plot_group_confidence,
    plot_heatmap_grid,
    plot_percent_increase,
    plot_sis_examples,
    plot_sis_size_curves,
    save_figure,
    sis_fraction_matrix,
    sis_size_curve,
    subset_predictions,
    trace_accuracy,
)
from overinterp.analysis.stats import MIN_VALUES, too_few
from overinterp.analysis.style import pyplot
from overinterp.errors import UserInputError
from overinterp.report.discover import JobEntry, RunInputs, discover
from overinterp.report.model import Figure, Report, Section, Table
from overinterp.report.render import render_html, render_markdown
from overinterp.results import render_table

__all__ = ["build_report", "ReportOptions"]

_BACKSELECT_CMD = (
    "overinterp backselect-dataset --model MODEL [--checkpoint CKPT] --dataset cifar10:test "
    "--limit 1000 --out {run}/jobs/NAME"
)


@dataclass
class ReportOptions:
    """Settings of a report.

    ``threshold``: τ of the SIS heatmaps and examples; ``thresholds``: the sweep of the
    SIS-size figures; ``fraction``: the pixel-subset size of Figure 2; ``max_model_images``:
    at most this many images per job get a forward pass (subset confidences);
    ``use_model=False`` skips every forward pass; ``trust_code=True`` lets an ``import:`` model
    spec in a job manifest run the code it names (default: such a model is not loaded).
    """

    mask_style: str = "grey"
    threshold: float = SCORE_THRESHOLD
    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS
    fraction: float = 0.05
    per_class: int = 1
    max_model_images: int = 1000
    use_model: bool = True
    trust_code: bool = False
    title: str = "Overinterpretation report"


@dataclass
class _JobData:
    entry: JobEntry
    fractions: Tensor  # (T, N) over ReportOptions.thresholds
    at_threshold: Tensor  # (N,) SIS fraction at options.threshold
    images: Tensor | None = None
    images_error: str | None = None
    subset: dict[str, Any] | None = None
    subset_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Builder:
    def __init__(self, run_dir: Path, out_dir: Path, options: ReportOptions, log: Callable[[str], None]) -> None:
        self.run_dir, self.out, self.opt, self.log = run_dir, out_dir, options, log
        self.fig_dir, self.table_dir = out_dir / "figures", out_dir / "tables"
        self.inputs: RunInputs = discover(run_dir, exclude=out_dir, trust_code=options.trust_code)
        if not self.inputs.jobs and self.inputs.results_path is None:
            raise UserInputError(
                f"{run_dir} holds no runs: no dataset job folder (manifest.json) and no results.csv anywhere "
                "under it; nothing was written (make them with `overinterp backselect-dataset … --out RUN/job` "
                "and `overinterp evaluate … --results RUN/results.csv`)"
            )
        self.data: list[_JobData] = []
        self.run_arg = _shell_path(run_dir)

    # ------------------------------------------------------------------ helpers
    def figure(self, fig: Any, key: str, title: str, caption: str) -> Figure:
        png, svg = save_figure(fig, self.fig_dir / key, formats=("png", "svg"))
        return Figure(key, title, caption, png, svg)

    def table(self, key: str, title: str, markdown: str, rows: Sequence[dict[str, Any]] | str | None) -> Table:
        path = None
        if rows is not None:
            path = self.table_dir / f"{key}.csv"
            if isinstance(rows, str):
                text = rows
            else:
                buf = io.StringIO()
                fields = list(dict.fromkeys(k for r in rows for k in r))
                w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
                w.writeheader()
                w.writerows([{k: _csv_value(v) for k, v in r.items()} for r in rows])
                text = buf.getvalue()
            atomic_write_text(path, text)
        return Table(key, title, markdown, path)

    def by_dataset(self) -> dict[str, list[_JobData]]:
        groups: dict[str, list[_JobData]] = {}
        for d in self.data:
            groups.setdefault(d.entry.dataset, []).append(d)
        return groups

    def job_arg(self, entry: JobEntry) -> str:
        return _shell_path(entry.path)

    # ------------------------------------------------------------------ loading
    def load(self) -> None:
        ts = self.opt.thresholds
        for entry in self.inputs.loaded:
            trace = entry.job.trace  # type: ignore[union-attr]
            self.log(f"report: {entry.label} on {entry.dataset_label}: {len(trace)} images")
            both = tuple(ts) + (self.opt.threshold,)
            f = sis_fraction_matrix(trace, both)
            d = _JobData(entry, f[: len(ts)], f[len(ts)])
            try:
                d.images = entry.job.load_images()  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - any failure: the section says so
                d.images_error = f"{type(exc).__name__}: {exc}"
            if self.opt.use_model and d.images is not None:
                d.subset, d.subset_error = self._subset_predictions(entry, d.images)
            elif not self.opt.use_model:
                d.subset_error = "forward passes turned off (`overinterp report --no-model`)"
            else:
                d.subset_error = f"the images are not readable ({d.images_error})"
            self.data.append(d)

    def _subset_predictions(self, entry: JobEntry, images: Tensor) -> tuple[dict[str, Any] | None, str | None]:
        job = entry.job
        assert job is not None
        try:
            model = job.load_model()
        except Exception as exc:  # noqa: BLE001
            return None, f"the model cannot be loaded ({type(exc).__name__}: {exc})"
        trace = job.trace
        n = min(len(trace), self.opt.max_model_images)
        keep = trace.keep_mask(self.opt.fraction)[:n]
        pred = subset_predictions(model, images[:n], keep, trace.target[:n], trace.baseline)
        labels = trace.labels[:n] if trace.labels is not None else None
        out: dict[str, Any] = {"n": n, "n_total": len(trace), **pred}
        if labels is not None:
            out["accuracy"] = float((pred["prediction"] == labels.long()).double().mean())
        full = torch.sigmoid(trace.full_logodds[:n].double())
        out["confidence_drop"] = float((full - pred["target_probability"]).mean())
        return out, None

    # ------------------------------------------------------------------ sections
    def overview(self) -> Section:
        s = Section("overview", "Run contents")
        inp = self.inputs
        rows, md = (
            [],
            [
                "| model | dataset | images | shards | method | accuracy on these images | folder |",
                "|---|---|---:|---:|---|---:|---|",
            ],
        )
        for e in inp.jobs:
            ident = e.manifest.get("identity", {})
            method = (e.manifest.get("spec", {}).get("method") or {}).get("name", "?")
            if e.job is not None:
                acc = trace_accuracy(e.job.trace)
                n = f"{len(e.job.trace)} of {ident.get('num_images', '?')}"
                shards = f"{len(e.job.shards)}/{ident.get('num_shards', '?')}"
            else:
                acc, n, shards = None, f"0 of {ident.get('num_images', '?')}", f"0/{ident.get('num_shards', '?')}"
            folder = _rel(e.path, self.run_dir)
            md.append(f"| {e.label} | {e.dataset_label} | {n} | {shards} | {method} | {_pct(acc)} | `{folder}` |")
            rows.append(
                {
                    "model": e.label,
                    "fingerprint": e.fingerprint,
                    "dataset": e.dataset,
                    "images": n,
                    "shards": shards,
                    "method": method,
                    "accuracy": acc,
                    "folder": folder,
                }
            )
            if e.job is not None and len(e.job.shards) < int(ident.get("num_shards", 0) or 0):
                s.text.append(
                    f"Job `{folder}` is not finished ({len(e.job.shards)} of {ident.get('num_shards')} "
                    "shards): its analyses use the complete shards; rerun its command to finish it."
                )
            if e.error:
                s.notes.append(
                    f"job `{folder}` could not be read: {e.error}. Rerun its "
                    f"`overinterp backselect-dataset` command to finish it."
                )
        if inp.jobs:
            s.tables.append(self.table("jobs", "Backward-selection jobs", "\n".join(md) + "\n", rows))
        else:
            s.notes.append(
                "no backward-selection job (no `manifest.json`) under the run folder; run "
                f"`{_BACKSELECT_CMD.format(run=self.run_arg)}`."
            )
        if inp.results is not None:
            exps = sorted({r.get("experiment") or "(none)" for r in inp.results})
            s.text.append(
                f"Results file `{_rel(inp.results_path, self.run_dir)}`: {len(inp.results)} rows "
                f"(experiments: {', '.join(exps) or '—'})."
            )
        elif inp.results_error:
            s.notes.append(f"the results file cannot be read: {inp.results_error}")
        else:
            s.notes.append(
                f"no results file `{self.run_arg}/results.csv`; "
                f"`overinterp evaluate --model M --dataset cifar10:test --results {self.run_arg}/results.csv` "
                "starts one."
            )
        s.text.append(
            "Every analysis below is computed from the stored backward-selection traces: SIS at any threshold τ "
            "come from the trace alone. Only the confidences on pixel subsets need a forward pass of the model."
        )
        return s

    def glance(self) -> Section:
        s = Section("score", f"At a glance: overinterpretation score per model (τ = {SCORE_THRESHOLD})")
        s.text.append(
            "Smaller SIS, higher accuracy on 5% subsets and a smaller confidence drop all mean the model "
            "decides from sparser evidence — more overinterpretation."
        )
        if not self.data:
            s.notes.append(f"no job to score; run `{_BACKSELECT_CMD.format(run=self.run_arg)}`.")
            return s
        md = [
            "| model | dataset | mean SIS size @ τ=0.99 (95% CI, n) | accuracy on own 5% subsets | confidence drop |",
            "|---|---|---:|---:|---:|",
        ]
        rows = []
        missing_cmds: list[str] = []
        for d in self.data:
            e = d.entry
            sc = model_score(
                e.job.trace,
                model=e.model_name,
                dataset=e.dataset,  # type: ignore[union-attr]
                fingerprint=e.fingerprint,
                rows=self.inputs.results or [],
                job_dir=self.job_arg(e),
                results_path=f"{self.run_arg}/results.csv",
            )
            if sc.mean_sis_fraction is None:
                size = f"— (no image with f(x) ≥ {SCORE_THRESHOLD}, of {sc.n_images})"
            else:
                if sc.sis_n < MIN_VALUES or sc.sis_ci[0] != sc.sis_ci[0]:
                    size = f"{100 * sc.mean_sis_fraction:.2f}%, {too_few(sc.sis_n)}"
                else:
                    ci = f" [{100 * sc.sis_ci[0]:.2f}, {100 * sc.sis_ci[1]:.2f}]"
                    size = f"{100 * sc.mean_sis_fraction:.2f}%{ci} (n={sc.sis_n})"
            acc, drop = _pct(sc.bs5_accuracy), _num(sc.confidence_drop)
            acc_src = drop_src = "results"
            if sc.bs5_accuracy is None and d.subset is not None and "accuracy" in d.subset:
                acc, acc_src = f"{_pct(d.subset['accuracy'])} (this report, {d.subset['n']} images)", "report"
            if sc.confidence_drop is None and d.subset is not None:
                drop, drop_src = f"{d.subset['confidence_drop']:.3f} (this report, {d.subset['n']} images)", "report"
            if acc == "—" or drop == "—":
                missing_cmds.append(next(iter(sc.hints.values())))
            md.append(f"| {e.label} | {e.dataset_label} | {size} | {acc} | {drop} |")
            rows.append(
                {
                    "model": e.label,
                    "fingerprint": e.fingerprint,
                    "dataset": e.dataset,
                    "mean_sis_fraction_099": sc.mean_sis_fraction,
                    "sis_ci_low": sc.sis_ci[0],
                    "sis_ci_high": sc.sis_ci[1],
                    "sis_n": sc.sis_n,
                    "bs5_accuracy": sc.bs5_accuracy
                    if sc.bs5_accuracy is not None
                    else (d.subset or {}).get("accuracy"),
                    "bs5_accuracy_source": acc_src if acc != "—" else "",
                    "confidence_drop": sc.confidence_drop
                    if sc.confidence_drop is not None
                    else (d.subset or {}).get("confidence_drop"),
                    "confidence_drop_source": drop_src if drop != "—" else "",
                }
            )
        cap = (
            "Mean SIS size: images with full-image confidence f(x) ≥ 0.99 only, 95% percentile-bootstrap interval "
            f"(inside [0, 100]%; none for fewer than {MIN_VALUES} images). "
            "Accuracy and confidence drop: from the results file (`evaluate_on` = `bs5`) when present, "
            "else from this report's forward pass on the job's images (marked)."
        )
        s.tables.append(self.table("score", "Score", "\n".join(md) + "\n\n" + cap + "\n", rows))
        for cmd in dict.fromkeys(missing_cmds):
            s.notes.append(f"accuracy on 5% subsets / confidence drop (results rows): run `{cmd}`.")
        return s

    def sis_size(self) -> Section:
        s = Section("sis-size", "SIS size vs confidence threshold (Figure 6)")
        if not self.data:
            s.notes.append(f"needs a backward-selection job: `{_BACKSELECT_CMD.format(run=self.run_arg)}`.")
            return s
        all_rows = []
        for k, (dataset, group) in enumerate(self.by_dataset().items()):
            curves = [
                sis_size_curve(
                    d.entry.job.trace,
                    self.opt.thresholds,
                    label=d.entry.label,  # type: ignore[union-attr]
                    fractions=d.fractions,
                )
                for d in group
            ]
            for c, d in zip(curves, group):
                for r in c.rows():
                    if r["n"] < MIN_VALUES:  # no interval: the cell says so
                        r = {**r, "ci_low": too_few(r["n"]), "ci_high": ""}
                    all_rows.append({"dataset": dataset, **r})
            plt = pyplot()
            fig, ax = plt.subplots(figsize=(6.4, 4.2))
            plot_sis_size_curves(
                curves, ax=ax, title=f"{group[0].entry.dataset_label}: mean SIS size vs τ (95% CI, bootstrap)"
            )
            ns = ", ".join(f"{c.label}: n = {int(c.n[0])}…{int(c.n[-1])}" for c in curves)
            s.figures.append(
                self.figure(
                    fig,
                    f"fig6-sis-size-{k}",
                    f"Mean SIS size vs threshold — {group[0].entry.dataset_label}",
                    "Mean SIS size as % of the image at each τ, over the images with full-image confidence f(x) ≥ τ "
                    f"({ns}); shaded band and error bars: 95% percentile-bootstrap interval of the mean (none where fewer "
                    f"than {MIN_VALUES} images reach τ). Legend: accuracy of "
                    "each model on the images of its job.",
                )
            )
        s.tables.append(
            self.table(
                "sis-size",
                "SIS size per threshold",
                _rows_markdown(
                    all_rows,
                    ("dataset", "series", "threshold", "n", "mean_sis_fraction", "ci_low", "ci_high"),
                    headers={
                        "series": "model",
                        "threshold": "τ",
                        "n": "n (f(x) ≥ τ)",
                        "mean_sis_fraction": "mean SIS (% of image)",
                        "ci_low": "95% CI low",
                        "ci_high": "95% CI high",
                    },
                    percent=("mean_sis_fraction", "ci_low", "ci_high"),
                ),
                all_rows,
            )
        )
        return s

    def correctness(self) -> Section:
        s = Section("correct-incorrect", "Correctly vs incorrectly classified images (Figures 5 and S3)")
        if not self.data:
            s.notes.append(
                f"needs backward-selection jobs on CIFAR-10 test and the CIFAR-10-C sample: "
                f"`{_BACKSELECT_CMD.format(run=self.run_arg)}` (and `--dataset cifar10c:sample`)."
            )
            return s
        groups = [
            (ds, [d for d in g if d.entry.job.trace.labels is not None])  # type: ignore[union-attr]
            for ds, g in self.by_dataset().items()
        ]
        groups = [(ds, g) for ds, g in groups if g]
        comps, all_rows = [], []
        for ds, g in groups:
            cs = [
                compare_correct_incorrect(
                    d.entry.job.trace,
                    self.opt.thresholds,
                    label=d.entry.label,  # type: ignore[union-attr]
                    fractions=d.fractions,
                )
                for d in g
            ]
            comps.append((ds, g[0].entry.dataset_label, cs))
            for c in cs:
                all_rows += [{"dataset": ds, **r} for r in c.rows()]
                if int(c.n_incorrect.max()) < 2:
                    s.text.append(
                        f"{c.label} on {g[0].entry.dataset_label}: fewer than two misclassified images "
                        "with f(x) ≥ τ at every τ, so no interval of the difference (Welch's t needs two per "
                        "group). A job over more images, including misclassified ones, fills this in."
                    )
        if not comps:
            s.notes.append("the jobs' traces hold no true labels.")
            return s
        drawable = [
            (ds, name, cs) for ds, name, cs in comps if any(bool((~torch.isnan(c.pct_increase)).any()) for c in cs)
        ]
        plt = pyplot()
        if not drawable:
            s.text.append(
                "No job has misclassified images with f(x) ≥ τ at any τ of the sweep, so there is no "
                "percentage increase to plot; the table below lists the group sizes."
            )
            s.tables.append(
                self.table(
                    "correct-vs-incorrect",
                    "Correct vs incorrect per threshold",
                    _rows_markdown(
                        all_rows,
                        ("dataset", "series", "threshold", "n_correct", "n_incorrect", "mean_correct"),
                        headers={"series": "model", "threshold": "τ", "mean_correct": "mean SIS correct (%)"},
                        percent=("mean_correct",),
                    ),
                    all_rows,
                )
            )
            return s
        fig, axes = _panels(plt, len(drawable))
        for ax, (_, name, cs) in zip(axes, drawable):
            plot_percent_increase(
                cs,
                ax=ax,
                title=f"{name}: % increase in mean SIS size, correct vs incorrect\n"
                "95% CI: Welch's t, within [-100%, ∞); labels n correct / n incorrect; hollow: a group under 5 images",
            )
        fig.tight_layout()
        s.figures.append(
            self.figure(
                fig,
                "fig5-correct-vs-incorrect",
                "SIS size of correct vs incorrect predictions",
                "Percentage increase of the mean SIS size of correctly classified images over misclassified ones, "
                "100·(m_c − m_i)/m_i, at each τ, over the images with f(x) ≥ τ. Error bars: 95% Welch's t interval of "
                "the difference in means m_c − m_i (kept inside [−1, 1]), scaled by 100/m_i (hollow markers: a group has fewer than five "
                "images, no interval). Point labels: n correct / n incorrect.",
            )
        )
        fig, axes = _panels(plt, len(comps))
        for ax, (_, name, cs) in zip(axes, comps):
            plot_group_confidence(cs, ax=ax, title=f"{name}: mean confidence per group (f(x) ≥ τ)")
        fig.tight_layout()
        s.figures.append(
            self.figure(
                fig,
                "figS3-group-confidence",
                "Mean confidence of correct and incorrect predictions",
                "Mean full-image confidence f(x) of correctly (solid) and incorrectly (dashed) classified images "
                "among those with f(x) ≥ τ.",
            )
        )
        s.tables.append(
            self.table(
                "correct-vs-incorrect",
                "Correct vs incorrect per threshold",
                _rows_markdown(
                    all_rows,
                    (
                        "dataset",
                        "series",
                        "threshold",
                        "n_correct",
                        "n_incorrect",
                        "mean_correct",
                        "mean_incorrect",
                        "pct_increase",
                        "pct_low",
                        "pct_high",
                    ),
                    headers={
                        "series": "model",
                        "threshold": "τ",
                        "mean_correct": "mean SIS correct (%)",
                        "mean_incorrect": "mean SIS incorrect (%)",
                        "pct_increase": "% increase",
                        "pct_low": "95% CI low",
                        "pct_high": "95% CI high",
                    },
                    percent=("mean_correct", "mean_incorrect"),
                ),
                all_rows,
            )
        )
        names = {d.entry.dataset for d in self.data}
        if not any(n.startswith("cifar10c") for n in names):
            s.notes.append(
                "the paper also compares on the CIFAR-10-C sample: "
                f"`overinterp backselect-dataset --model MODEL --dataset cifar10c:sample --out {self.run_arg}/jobs/NAME-c10c`."
            )
        return s

    def locations(self) -> Section:
        s = Section("locations", "Where the pixels are (Figures 2 and 4)")
        if not self.data:
            s.notes.append(f"needs a backward-selection job: `{_BACKSELECT_CMD.format(run=self.run_arg)}`.")
            return s
        pct = round(100 * self.opt.fraction, 6)
        conf_rows: list[dict[str, Any]] = []
        for k, (dataset, group) in enumerate(self.by_dataset().items()):
            name = group[0].entry.dataset_label
            freqs, titles, subs = [], [], []
            for d in group:
                trace = d.entry.job.trace  # type: ignore[union-attr]
                freqs.append(location_frequency(trace.keep_mask(self.opt.fraction)))
                titles.append(d.entry.label)
                value, source = self._subset_confidence(d)
                subs.append("confidence: not available" if value is None else f"mean confidence {value:.3f} ({source})")
                conf_rows.append(
                    {
                        "model": d.entry.label,
                        "dataset": dataset,
                        "mean_confidence": value,
                        "source": source or "not available",
                    }
                )
            fig = plot_heatmap_grid(freqs, titles, subs, suptitle=f"{name}: location of the {pct:g}% pixel subsets")
            s.figures.append(
                self.figure(
                    fig,
                    f"fig2-subset-locations-{k}",
                    f"Pixel locations of {pct:g}% backward-selection subsets — {name}",
                    f"Fraction of images whose {pct:g}% subset (the last-removed features of backward selection) "
                    "contains each pixel; one colour scale for all panels. Under each panel: the model's mean confidence "
                    "(in the class it predicts on the full image) on those subsets, masked with the baseline it was "
                    "selected with.",
                )
            )
            freqs, titles, subs = [], [], []
            for d in group:
                trace = d.entry.job.trace  # type: ignore[union-attr]
                has = ~torch.isnan(d.at_threshold)
                sis = trace.find_sis(self.opt.threshold)
                freqs.append(location_frequency(trace.sis_mask(sis), valid=has))
                titles.append(d.entry.label)
                subs.append(f"{int(has.sum())} of {len(trace)} images have an SIS")
            fig = plot_heatmap_grid(
                freqs, titles, subs, suptitle=f"{name}: SIS locations at τ = {self.opt.threshold:g}"
            )
            s.figures.append(
                self.figure(
                    fig,
                    f"fig4-sis-locations-{k}",
                    f"SIS locations at τ = {self.opt.threshold:g} — {name}",
                    "Fraction of the SIS (images with f(x) ≥ τ only) that contain each pixel.",
                )
            )
        md = [f"| model | dataset | mean confidence on the {pct:g}% subsets | source |", "|---|---|---:|---|"]
        md += [
            f"| {r['model']} | {_short(r['dataset'])} | {_num(r['mean_confidence'])} | {r['source']} |"
            for r in conf_rows
        ]
        s.tables.insert(
            0,
            self.table(
                "subset-confidence", f"Confidence on the {pct:g}% subsets (Figure 2)", "\n".join(md) + "\n", conf_rows
            ),
        )
        for d in self.data:
            if d.subset is None and d.extra.get("subset_note"):
                s.notes.append(d.extra["subset_note"])
        return s

    def _subset_confidence(self, d: _JobData) -> tuple[float | None, str]:
        """Mean confidence on the subsets and where it comes from (forward pass here, or results)."""
        if d.subset is not None:
            conf = float(d.subset["target_probability"].mean())
            part = "" if d.subset["n"] == d.subset["n_total"] else f", first {d.subset['n']} images"
            return conf, f"this report{part}"
        e = d.entry
        row = find_result(
            self.inputs.results or [],
            "subset_confidence",
            fingerprint=e.fingerprint,
            model=e.model_name,
            dataset=e.dataset,
            evaluate_on=f"bs{round(100 * self.opt.fraction, 6):g}",
        )
        if row is not None:
            return float(row["value"]), "results"
        d.extra["subset_note"] = (
            f"{e.label}: no confidence on the subsets — {d.subset_error}; and no results row "
            f"`subset_confidence`. `overinterp subsets evaluate --job {self.job_arg(e)} "
            f"--results {self.run_arg}/results.csv` writes one."
        )
        return None, ""

    def examples(self) -> Section:
        s = Section("examples", f"SIS examples at τ = {self.opt.threshold:g} (Figures 1 and S1)")
        style = self.opt.mask_style
        if not self.data:
            s.notes.append(f"needs a backward-selection job: `{_BACKSELECT_CMD.format(run=self.run_arg)}`.")
            return s
        for k, d in enumerate(self.data):
            e, trace = d.entry, d.entry.job.trace  # type: ignore[union-attr]
            if d.images is None:
                s.notes.append(f"{e.label}: the images of `{e.dataset}` are not readable here ({d.images_error}).")
                continue
            has = ~torch.isnan(d.at_threshold)
            labels = trace.labels if trace.labels is not None else trace.target
            eligible = has & (trace.target == labels)
            classes = e.job.classes or []  # type: ignore[union-attr]
            picked = pick_examples(
                eligible, labels, self.opt.per_class, num_classes=max(len(classes), 1) if classes else None
            )
            if not picked:
                s.text.append(
                    f"{e.label} on {e.dataset_label}: no correctly classified image with f(x) ≥ "
                    f"{self.opt.threshold:g}, so no SIS to show."
                )
                continue
            idx = torch.tensor(picked)
            sis = trace.find_sis(self.opt.threshold)
            keep = trace.sis_mask(sis)[idx]
            conf = torch.sigmoid(trace.full_logodds[idx].double())
            caps = [f"{_class(classes, int(labels[i]))}\np={float(c):.3f}" for i, c in zip(picked, conf)]
            fig = plot_sis_examples(
                d.images[idx],
                keep,
                caps,
                style=style,
                baseline=trace.baseline,
                title=f"{e.label} on {e.dataset_label}: SIS at τ = {self.opt.threshold:g}",
            )
            s.figures.append(
                self.figure(
                    fig,
                    f"fig1-sis-examples-{k}",
                    f"SIS examples — {e.label} on {e.dataset_label}",
                    f"Per class the first correctly classified image with f(x) ≥ {self.opt.threshold:g}: the image (top) "
                    f"and its SIS alone (bottom), pixels outside the SIS drawn {_style_words(style)}; p = full-image "
                    "confidence.",
                )
            )
        return s

    def ensembles(self) -> Section:
        s = Section("ensemble", "An ensemble's SIS beside its members' (Figure S2)")
        ens = [d for d in self.data if d.entry.is_ensemble]
        if not ens:
            s.notes.append(
                "no job of an ensemble model in this run. Write one with "
                "`overinterp ensemble --out e.json a.pt b.pt …`, then run `overinterp backselect-dataset "
                "--model e.json …` and the same command for each member (same dataset and positions)."
            )
            return s
        for k, d in enumerate(ens):
            e = d.entry
            members = _ensemble_members(e)
            mates = [
                m
                for m in self.data
                if not m.entry.is_ensemble
                and m.entry.dataset == e.dataset
                and m.entry.positions == e.positions
                and _resolved(m.entry.model_spec.get("checkpoint")) in members
            ]
            if not mates:
                s.notes.append(
                    f"{e.label}: no job of its members on the same images; run `overinterp "
                    f"backselect-dataset --checkpoint MEMBER.pt --dataset {e.dataset} …` with the same "
                    f"positions for each of its {len(members)} members."
                )
                continue
            if d.images is None:
                s.notes.append(f"{e.label}: the images are not readable here ({d.images_error}).")
                continue
            trace = e.job.trace  # type: ignore[union-attr]
            labels = trace.labels if trace.labels is not None else trace.target
            classes = e.job.classes or []  # type: ignore[union-attr]
            eligible = ~torch.isnan(d.at_threshold) & (trace.target == labels)
            picked = pick_examples(eligible, labels, self.opt.per_class, num_classes=len(classes) or None)
            if not picked:
                s.text.append(f"{e.label}: no correctly classified image with f(x) ≥ {self.opt.threshold:g}.")
                continue
            idx = torch.tensor(picked)
            cols = [(e.label, trace.sis_mask(trace.find_sis(self.opt.threshold))[idx])]
            for m in mates:
                mt = m.entry.job.trace  # type: ignore[union-attr]
                cols.append((m.entry.label, mt.sis_mask(mt.find_sis(self.opt.threshold))[idx]))
            fig = plot_ensemble_sis(
                d.images[idx],
                cols,
                [_class(classes, int(labels[i])) for i in picked],
                style=self.opt.mask_style,
                baseline=trace.baseline,
                title=f"{e.label}: SIS at τ = {self.opt.threshold:g}, ensemble then members",
            )
            s.figures.append(
                self.figure(
                    fig,
                    f"figS2-ensemble-{k}",
                    f"Ensemble vs members — {e.label}",
                    "Each row one image (correctly classified by the ensemble with f(x) ≥ τ); columns: the image, the "
                    "ensemble's SIS, each member's SIS on the same image (\"no SIS\": that member's confidence is below τ).",
                )
            )
        return s

    def result_tables(self) -> Section:
        s = Section("tables", "Tables from the results file (Tables 1, S1, 2 and others)")
        rows = self.inputs.results
        cmd_eval = f"overinterp evaluate --model MODEL --dataset cifar10:test --results {self.run_arg}/results.csv"
        cmd_subsets = (
            f"overinterp subsets train --train-job TRAIN_JOB --test-job TEST_JOB --results {self.run_arg}/results.csv"
        )
        cmd_human = f"overinterp human score --study STUDY --out STUDY/scores --results {self.run_arg}/results.csv"
        if rows is None:
            s.notes.append(
                f"no results file. Table 1: `{cmd_eval}` and `{cmd_subsets}`; "
                f"Table S1: the same with `--augment`; Table 2: `{cmd_human}`."
            )
            return s
        by_exp: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_exp.setdefault(r.get("experiment") or "(no experiment)", []).append(r)
        for exp, group in by_exp.items():
            metrics = list(dict.fromkeys(r["metric"] for r in group))
            for metric in metrics:
                percent = metric == "accuracy"
                md = render_table(group, "markdown", metric=metric, percent=percent, digits=2 if percent else 4)
                text = render_table(group, "csv", metric=metric)
                title = f"{_paper_name(exp, group)}experiment `{exp}` — {metric}"
                key = "results-" + _slug(f"{exp}-{metric}")
                s.tables.append(self.table(key, title, md, text))
        if not any(r.get("experiment") in ("table1",) or (r.get("train_on") or "full") != "full" for r in rows):
            s.notes.append(f"Table 1 (models trained on pixel subsets): `{cmd_subsets}`.")
        if not any(_is_human(r) for r in rows):
            s.notes.append(f"Table 2 (human accuracy on pixel subsets) appears once a study is scored: `{cmd_human}`.")
        return s

    # ------------------------------------------------------------------ all
    def build(self) -> Report:
        self.load()
        report = Report(
            self.opt.title,
            self.run_dir.resolve(),
            self.out.resolve(),
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        )
        for make in (
            self.overview,
            self.glance,
            self.sis_size,
            self.correctness,
            self.locations,
            self.examples,
            self.ensembles,
            self.result_tables,
        ):
            report.sections.append(make())
        report.html_path = atomic_write_text(self.out / "report.html", render_html(report))
        report.markdown_path = atomic_write_text(self.out / "summary.md", render_markdown(report))
        return report


def build_report(
    run_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    options: ReportOptions | None = None,
    *,
    log: Callable[[str], None] | None = None,
) -> Report:
    """Write the report of ``run_dir`` into ``out_dir`` (default ``run_dir/report``); returns it.

    Files: ``report.html`` (self-contained), ``summary.md``, ``figures/*.png|svg``, ``tables/*.csv``.
    """
    opt = options or ReportOptions()
    if opt.mask_style not in MASK_STYLES:
        raise ValueError(f"unknown mask style {opt.mask_style!r}; choose one of {', '.join(MASK_STYLES)}")
    if not 0.0 < opt.threshold < 1.0 or not all(0.0 < t < 1.0 for t in opt.thresholds):
        raise ValueError("thresholds must lie in (0, 1)")
    if not 0.0 < opt.fraction <= 1.0:
        raise ValueError(f"fraction must lie in (0, 1], got {opt.fraction}")
    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run / "report"
    say = log or (lambda msg: print(msg, file=sys.stderr))
    return _Builder(run, out, opt, say).build()


# ---------------------------------------------------------------------- small helpers


def _shell_path(p: Path) -> str:
    try:
        rel = os.path.relpath(p)
    except ValueError:
        return str(p)
    return rel if not rel.startswith("../..") else str(p.resolve())


def _rel(p: Path | None, base: Path) -> str:
    if p is None:
        return ""
    try:
        return os.path.relpath(p, base)
    except ValueError:
        return str(p)


def _panels(plt: Any, n: int, columns: int = 2) -> tuple[Any, list[Any]]:
    """A figure with ``n`` plot panels, at most ``columns`` per row (unused ones hidden)."""
    cols = min(n, columns)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.2 * cols, 4.5 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.axis("off")
    return fig, flat[:n]


def _short(dataset: str) -> str:
    """A dataset spec without folders (``/a/b/test.npz`` → ``test.npz``)."""
    head, at, _ = dataset.partition("@")
    name = head if at else dataset
    return Path(name).name if "/" in name or os.sep in name else name


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if v != v else f"{v:.6g}"
    return "" if v is None else v


def _rows_markdown(
    rows: Sequence[dict[str, Any]],
    cols: Sequence[str],
    limit: int = 60,
    headers: dict[str, str] | None = None,
    percent: Sequence[str] = (),
) -> str:
    """A Markdown table of ``rows`` (first ``limit``); ``percent`` columns (fractions) shown ×100."""
    names = headers or {}
    head = "| " + " | ".join(names.get(c, c) for c in cols) + " |"
    sep = "|" + "|".join("---" if c in ("dataset", "series") else "---:" for c in cols) + "|"
    body = []
    for r in rows[:limit]:
        cells = []
        for c in cols:
            v = r.get(c)
            if c == "dataset":
                v = _short(str(v))
            if isinstance(v, float):
                if v != v:
                    v = "—"
                elif c == "threshold":
                    v = f"{v:.4g}"
                else:
                    v = f"{100 * v:.2f}" if c in percent else f"{v:.4g}"
            cells.append(str(v))
        body.append("| " + " | ".join(cells) + " |")
    more = ["", f"First {limit} of {len(rows)} rows; all in the CSV."] if len(rows) > limit else []
    return "\n".join([head, sep] + body + more) + "\n"


def _class(classes: Sequence[str], k: int) -> str:
    return classes[k] if 0 <= k < len(classes) else f"class {k}"


def _style_words(style: str) -> str:
    return {
        "grey": "in neutral grey",
        "checkerboard": "as a grey checkerboard",
        "baseline": "in the masking baseline's colour",
    }.get(style, style)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")


def _is_human(r: dict[str, Any]) -> bool:
    return (r.get("experiment") or "").startswith("human") or r.get("arch") == "human"


def _paper_name(exp: str, group: list[dict[str, Any]]) -> str:
    if exp == "table1":
        return "Table 1 — "
    if exp in ("table-s1", "tableS1", "table_s1"):
        return "Table S1 — "
    if any(_is_human(r) for r in group):
        return "Table 2 — "
    return ""


def _resolved(path: Any) -> str:
    return str(Path(str(path)).resolve()) if path else ""


def _ensemble_members(entry: JobEntry) -> set[str]:
    """Resolved checkpoint paths of the members of an ensemble job's JSON file."""
    p = Path(str(entry.model_spec.get("name")))
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return set()
    out = set()
    for m in spec.get("members") or []:
        ck = Path(m if isinstance(m, str) else (m or {}).get("checkpoint", ""))
        out.add(str((ck if ck.is_absolute() else p.parent / ck).resolve()))
    return out
