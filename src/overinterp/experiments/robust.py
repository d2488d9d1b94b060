"""SIS of adversarially robust models beside standard ones (paper §4.5, Figure 1's "Adv. Robust" row).

For each model: the CIFAR-10 test images it classifies with confidence
``f ≥ τ`` (0.99; optionally only correct ones), the first ``limit`` of them, one
SIS each at ``τ``; the mean SIS size (fraction of pixels) is the number the
paper compares — robust models need larger SIS. Each model's trace is written
to ``<out>/traces/<label>.pt``; ``summary.json`` and ``summary.csv`` hold one
line per model; rows go to a results file via :func:`~overinterp.append_results`.

Models are given as model specs (:func:`overinterp.models.parse_model_spec`, every
form in docs/how-to/model-formats.md: registry names with ``@CKPT``,
checkpoints, ensembles, ``robustbench:NAME``, ``import:pkg.module:Class@CKPT``,
each with ``LABEL=`` and ``?key=value`` options); :func:`load_robust_model` loads one
as a :class:`RobustModel` of a group.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from overinterp._atomic import atomic_write_text
from overinterp.data.base import LabeledImages
from overinterp.models.classifier import Classifier
from overinterp.models.predict import predict_logits
from overinterp.models.spec import ModelSpec, parse_model_spec
from overinterp.sis.backselect import backselect
from overinterp.sis.methods import Exact, Method
from overinterp.sis.scoring import check_threshold
from overinterp.training.evaluation import accuracy_from_logits

__all__ = ["RobustModel", "load_robust_model", "run_robust_sis", "ROBUST_GROUP", "STANDARD_GROUP"]

ROBUST_GROUP = "Adv. Robust"
STANDARD_GROUP = "Standard"


@dataclass
class RobustModel:
    """A loaded model with its row label, group and where it came from."""

    label: str
    group: str
    model: Classifier
    source: str
    checkpoint: str | None = None


def load_robust_model(spec: str | ModelSpec, group: str = STANDARD_GROUP, *, trust_code: bool = False) -> RobustModel:
    """Load a model spec (:func:`~overinterp.models.parse_model_spec`) as a member of ``group``.

    ``trust_code``: a string spec may be ``import:`` code (pass ``True`` for specs the user typed);
    a :class:`ModelSpec` carries its own ``trust_code``."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec, trust_code=trust_code)
    model = parsed.load()
    label = parsed.label or (getattr(model, "name", "model") if parsed.kind == "checkpoint" else parsed.display_name)
    return RobustModel(label, group, model, str(spec), parsed.checkpoint)


def _confident(
    model: Classifier, data: LabeledImages, tau: float, correct_only: bool, batch_size: int, device: torch.device
) -> tuple[list[int], float]:
    """Indices of images with ``f ≥ τ`` (and correct), and the model's accuracy."""
    if len(data) == 0:
        return [], 0.0
    logits = predict_logits(
        model, data.images, batch_size=batch_size, device=device, dtype=torch.float32, out_device=None
    )  # (N, K)
    conf, pred = torch.softmax(logits.double(), dim=1).max(1)
    ok = conf >= tau
    if correct_only:
        ok &= pred == data.labels.to(pred.device)
    return ok.nonzero().flatten().tolist(), accuracy_from_logits(logits.float(), data.labels)["accuracy"]


def run_robust_sis(
    models: Sequence[RobustModel],
    data: LabeledImages,
    out_dir: str | Path,
    *,
    threshold: float = 0.99,
    limit: int | None = 100,
    method: Method | None = None,
    correct_only: bool = False,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    results: str | Path | None = None,
    experiment: str = "robust-sis",
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """SIS sizes of several models on their confidently classified images (see the module doc).

    Returns one summary dict per model (also written to ``summary.json``/``.csv``).
    """
    from overinterp.results import append_results, model_fingerprint

    tau = check_threshold(threshold)
    if not models:
        raise ValueError("give at least one model")
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"model labels must differ, got {labels}; prefix specs with LABEL=")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be ≥ 1, got {limit}")
    method = Exact() if method is None else method
    device = torch.device(device)
    out = Path(out_dir)
    (out / "traces").mkdir(parents=True, exist_ok=True)
    dataset_key = data.meta.get("key", data.name)
    rows: list[dict[str, Any]] = []
    for spec in models:
        model = spec.model.to(device).eval()
        t0 = time.perf_counter()
        idx, accuracy = _confident(model, data, tau, correct_only, 500, device)
        chosen = idx if limit is None else idx[:limit]
        row: dict[str, Any] = {
            "model": spec.label,
            "group": spec.group,
            "source": spec.source,
            "fingerprint": model_fingerprint(model),
            "dataset": dataset_key,
            "threshold": tau,
            "method": method.describe(),
            "accuracy": accuracy,
            "scanned": len(data),
            "confident": len(idx),
            "n": len(chosen),
        }
        if chosen:
            sel = torch.tensor(chosen)
            images = data.images[sel].to(device)
            images = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
            log(f"{spec.label} ({spec.group}): {len(idx)} of {len(data)} images with f ≥ {tau}; SIS on {len(chosen)}")
            trace = backselect(
                model, images, method=method, batch_size=batch_size, progress=progress, labels=data.labels[sel]
            )
            res = trace.find_sis(tau, model, images, batch_size=batch_size)
            trace.meta.update({"indices": chosen, "label": spec.label, "group": spec.group, "source": spec.source})
            trace.save(out / "traces" / f"{re.sub(r'[^A-Za-z0-9_.+-]', '_', spec.label)}.pt")
            p = trace.num_features.tolist()
            fr = [s.numel() / p[i] for i, s in enumerate(res) if s is not None]
            row.update(
                {
                    "with_sis": len(fr),
                    "sis_fraction_mean": statistics.fmean(fr) if fr else math.nan,
                    "sis_fraction_std": statistics.stdev(fr) if len(fr) > 1 else 0.0,
                    "sis_fraction_median": statistics.median(fr) if fr else math.nan,
                    "sis_pixels_mean": statistics.fmean(f * p[0] for f in fr) if fr else math.nan,
                }
            )
        else:
            log(f"{spec.label} ({spec.group}): no image reaches f ≥ {tau}")
            row.update(
                {
                    "with_sis": 0,
                    "sis_fraction_mean": math.nan,
                    "sis_fraction_std": math.nan,
                    "sis_fraction_median": math.nan,
                    "sis_pixels_mean": math.nan,
                }
            )
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        log(
            f"  mean SIS size {100 * row['sis_fraction_mean']:.2f}% of pixels over {row['with_sis']} images "
            f"({row['seconds']:.1f} s)"
        )
        if results is not None and row["with_sis"]:
            notes = f"group={spec.group}; tau={tau}; method={method.name}; source={spec.source}"
            append_results(
                results,
                [
                    {
                        "experiment": experiment,
                        "model": spec.label,
                        "arch": getattr(model, "arch", None) or model.name,
                        "fingerprint": row["fingerprint"],
                        "checkpoint": spec.checkpoint or "",
                        "dataset": dataset_key,
                        "metric": "sis_size_mean",
                        "value": row["sis_fraction_mean"],
                        "n": row["with_sis"],
                        "notes": notes,
                    },
                    {
                        "experiment": experiment,
                        "model": spec.label,
                        "arch": getattr(model, "arch", None) or model.name,
                        "fingerprint": row["fingerprint"],
                        "checkpoint": spec.checkpoint or "",
                        "dataset": dataset_key,
                        "metric": "confident_fraction",
                        "value": len(idx) / max(1, len(data)),
                        "n": len(data),
                        "notes": notes,
                    },
                ],
            )
    atomic_write_text(out / "summary.json", json.dumps(rows, indent=1, default=str))
    cols = [
        "model",
        "group",
        "n",
        "with_sis",
        "sis_fraction_mean",
        "sis_fraction_std",
        "sis_fraction_median",
        "sis_pixels_mean",
        "confident",
        "scanned",
        "accuracy",
        "threshold",
        "seconds",
        "fingerprint",
        "source",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(out / "summary.csv", buf.getvalue())
    return rows
