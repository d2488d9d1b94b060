"""An at-a-glance overinterpretation score per model.

Three numbers, each smaller = more overinterpretation:

* **mean SIS size at τ = 0.99** (fraction of the image), from the model's trace;
* **accuracy on its own 5% backward-selection subsets** (``evaluate_on = bs5``) — a
  model that stays accurate on 5% of the pixels classifies from sparse evidence;
* **confidence drop** from the full image to those subsets (``confidence_drop_mean``).

The last two come from the results file (rows written by ``overinterp subsets
evaluate``); a value the run does not have is ``None`` with the command that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from overinterp.analysis.sis_size import sis_fractions
from overinterp.analysis.stats import bounded_mean_ci
from overinterp.sis.trace import BackselectTrace

__all__ = ["SCORE_THRESHOLD", "ModelScore", "find_result", "model_score"]

SCORE_THRESHOLD = 0.99


@dataclass
class ModelScore:
    """One model's score; ``None`` where the run lacks the input (see ``hints``)."""

    model: str
    dataset: str
    fingerprint: str
    threshold: float
    mean_sis_fraction: float | None
    sis_ci: tuple[float, float]
    sis_n: int
    n_images: int
    bs5_accuracy: float | None
    bs5_n: int | None
    confidence_drop: float | None
    sources: dict[str, str] = field(default_factory=dict)
    hints: dict[str, str] = field(default_factory=dict)


def find_result(
    rows: Sequence[Mapping[str, Any]],
    metric: str,
    *,
    fingerprint: str = "",
    model: str = "",
    dataset: str = "",
    evaluate_on: str | None = None,
    job: str = "",
) -> Mapping[str, Any] | None:
    """The latest row of ``metric`` for this model: matched by fingerprint when the row
    has one, else by model name; rows on ``dataset`` preferred over other datasets.

    With ``job`` (a job folder's name), rows made from another job's subsets (notes
    ``subsets of job NAME``) are left out and this job's rows preferred."""

    def same_model(r: Mapping[str, Any]) -> bool:
        fp = r.get("fingerprint") or ""
        return fp == fingerprint if fp and fingerprint else (r.get("model") or "") == model

    hits = [
        r
        for r in rows
        if r.get("metric") == metric
        and same_model(r)
        and (evaluate_on is None or (r.get("evaluate_on") or "full") == evaluate_on)
    ]
    if job:
        mine = [r for r in hits if f"subsets of job {job}" in (r.get("notes") or "")]
        hits = mine or [r for r in hits if "subsets of job " not in (r.get("notes") or "")]
    on_dataset = [r for r in hits if dataset and r.get("dataset") == dataset]
    pool = on_dataset or hits
    return pool[-1] if pool else None


def model_score(
    trace: BackselectTrace,
    *,
    model: str,
    dataset: str,
    fingerprint: str = "",
    rows: Sequence[Mapping[str, Any]] | None = None,
    threshold: float = SCORE_THRESHOLD,
    job_dir: str = "JOB_DIR",
    results_path: str = "RUN_DIR/results.csv",
) -> ModelScore:
    """Score of the model that made ``trace`` (on ``dataset``), reading results ``rows``."""
    f = sis_fractions(trace, threshold)
    ci = bounded_mean_ci(f)
    rows = rows or []
    hint = f"overinterp subsets evaluate --job {job_dir} --results {results_path}"
    job = Path(job_dir).name if job_dir != "JOB_DIR" else ""
    acc_row = find_result(
        rows, "accuracy", fingerprint=fingerprint, model=model, dataset=dataset, evaluate_on="bs5", job=job
    )
    drop_row = find_result(
        rows, "confidence_drop_mean", fingerprint=fingerprint, model=model, dataset=dataset, evaluate_on="bs5", job=job
    )
    hints, sources = {}, {}
    if acc_row is None:
        hints["bs5_accuracy"] = hint
    else:
        sources["bs5_accuracy"] = f"results: {acc_row.get('experiment') or '?'}, {acc_row.get('dataset')}"
    if drop_row is None:
        hints["confidence_drop"] = hint
    else:
        sources["confidence_drop"] = f"results: {drop_row.get('experiment') or '?'}, {drop_row.get('dataset')}"
    return ModelScore(
        model=model,
        dataset=dataset,
        fingerprint=fingerprint,
        threshold=float(threshold),
        mean_sis_fraction=None if ci.n == 0 else ci.mean,
        sis_ci=(ci.low, ci.high),
        sis_n=ci.n,
        n_images=len(trace),
        bs5_accuracy=None if acc_row is None else float(acc_row["value"]),
        bs5_n=None if acc_row is None else acc_row.get("n"),
        confidence_drop=None if drop_row is None else float(drop_row["value"]),
        sources=sources,
        hints=hints,
    )
