"""Accuracy of a model (a Classifier, an Ensemble, any module) on datasets, and the
rows of the results file (:mod:`overinterp.results`) it makes.

Images may be uint8 (converted per batch: ``x.float() / 255``) or float pixels,
on the CPU or the model's device; batches go to the model's device.
CIFAR-10-C's ``all`` split is evaluated block by block (19 corruptions × 5
severities × 10,000 images, one block in memory at a time); its accuracy is
over all 950,000 images, and each block gets its own row
(``cifar10c:<corruption>/<severity>``).
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from overinterp.data.base import LabeledImages
from overinterp.data.cifar10c import iter_cifar10c
from overinterp.models.predict import (
    check_finite_logits,
    check_labels,
    model_device,
    predict_logits,
    probe_model,
)
from overinterp.results import make_row, model_fingerprint

__all__ = ["evaluate_accuracy", "accuracy_from_logits", "evaluate_datasets", "result_rows"]


def accuracy_from_logits(logits: Tensor, labels: Tensor, where: str = "evaluating") -> dict[str, Any]:
    """Top-1 accuracy, mean cross-entropy and mean confidence from logits ``(N, K)``
    and labels ``(N,)`` (on the logits' device), computed in the logits' dtype.

    Returns:
        ``{"accuracy", "loss", "mean_confidence" (mean max softmax probability), "correct", "n"}``.

    Raises:
        FloatingPointError: non-finite logits or loss (``where`` names the input).
        UserInputError: a label that is not one of the ``K`` classes.
    """
    if logits.dim() != 2 or labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
        raise ValueError(f"need logits (N, K) and labels (N,); got {tuple(logits.shape)} and {tuple(labels.shape)}")
    n = int(logits.shape[0])
    if n == 0:
        raise ValueError("no predictions to score")
    check_finite_logits(logits, where)
    check_labels(labels, int(logits.shape[1]), where)
    y = labels.to(logits.device, torch.long)
    correct = int((logits.argmax(1) == y).sum())
    loss = float(F.cross_entropy(logits, y, reduction="none").double().sum())
    confidence = float(logits.softmax(1).amax(1).double().sum())
    if not math.isfinite(loss):
        raise FloatingPointError(f"{where}: the mean cross-entropy loss is not finite ({loss / n})")
    return {"accuracy": correct / n, "loss": loss / n, "mean_confidence": confidence / n, "correct": correct, "n": n}


def evaluate_accuracy(
    model: Callable[[Tensor], Tensor],
    images: Tensor | LabeledImages,
    labels: Tensor | None = None,
    *,
    batch_size: int = 500,
    amp: bool = False,
    progress: bool = False,
    desc: str = "evaluating",
    check: bool = False,
) -> dict[str, Any]:
    """Top-1 accuracy, mean cross-entropy and mean confidence of ``model`` on
    labelled images ``(N, C, H, W)`` (uint8 or float pixels) with labels ``(N,)``.

    ``model`` is put in eval mode for the call (its mode is restored); the
    logits come from :func:`~overinterp.models.predict.predict_logits` on the
    model's device and are scored in float32 (:func:`accuracy_from_logits`).
    ``amp`` runs CUDA models in bfloat16 autocast (off by default: accuracy
    claims are made in float32). ``check``: warn (:class:`~overinterp.training.pipeline.PipelineWarning`)
    when the accuracy is not clearly above chance or the predictions collapse onto one class
    (:func:`~overinterp.training.pipeline.check_pipeline`: a mis-declared model, not a bad one).

    Returns:
        ``{"accuracy", "loss", "mean_confidence", "correct", "n"}``.
    """
    if isinstance(images, LabeledImages):
        images, labels = images.images, images.labels if labels is None else labels
    if labels is None:
        raise ValueError("evaluate_accuracy needs labels")
    if images.dim() != 4 or labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"need images (N, C, H, W) and labels (N,); got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if int(images.shape[0]) == 0:
        raise ValueError("no images to evaluate")
    check_labels(labels, probe_model(model, tuple(images.shape[1:]), where=desc), desc)
    device = model_device(model)
    was_training = isinstance(model, nn.Module) and model.training
    if isinstance(model, nn.Module):
        model.eval()
    use_amp = amp and device.type == "cuda"
    amp_dtype = torch.float16 if use_amp and not torch.cuda.is_bf16_supported() else torch.bfloat16
    try:
        with torch.autocast("cuda", dtype=amp_dtype, enabled=use_amp):
            logits = predict_logits(
                model,
                images,
                batch_size=batch_size,
                device=device,
                dtype=torch.float32,
                out_device=None,
                progress=progress,
                desc=desc,
            )
    finally:
        if was_training:
            model.train()
    if check:
        from overinterp.training.pipeline import PipelineWarning, check_pipeline

        verdict = check_pipeline(logits.float(), labels)
        if not verdict.ok:
            warnings.warn(verdict.message(desc, "The accuracy below is of that pipeline."), PipelineWarning, 2)
    return accuracy_from_logits(logits.float(), labels, desc)


def evaluate_datasets(
    model: Callable[[Tensor], Tensor],
    datasets: Sequence[str | os.PathLike[str] | LabeledImages],
    *,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    limit: int | None = None,
    batch_size: int = 500,
    amp: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluate on each dataset: a spec string ``NAME[:SPLIT][@ROOT]`` (see
    :func:`~overinterp.data.load_dataset`), a labelled array file (``.npz`` with
    ``*images`` and ``*labels``, ``.pt``; recorded as ``file:<name>``) or
    already-loaded :class:`LabeledImages`.

    Returns one dict per evaluated set — ``dataset`` (its key), ``accuracy``,
    ``loss``, ``mean_confidence``, ``correct``, ``n`` — plus, for ``cifar10c`` / ``cifar10c:all``, one
    per corruption × severity block before the overall one.
    """
    out: list[dict[str, Any]] = []
    for spec in datasets:
        if isinstance(spec, LabeledImages):
            key = spec.meta.get("key", spec.name)
            res = evaluate_accuracy(
                model, spec, batch_size=batch_size, amp=amp, progress=progress, desc=key, check=True
            )
            out.append({"dataset": key, **res})
            if log:
                log(_line(out[-1]))
            continue
        from overinterp.data.specs import open_dataset, parse_dataset

        parsed = parse_dataset(os.fspath(spec)).with_root(root)
        key = parsed.key
        if key == "cifar10c:all" and limit is None:
            where = parsed.root
            blocks = []
            for corruption, severity, block in iter_cifar10c(where, download=download, progress=progress):
                res = evaluate_accuracy(
                    model,
                    block,
                    batch_size=batch_size,
                    amp=amp,
                    progress=progress,
                    desc=f"cifar10c {corruption}/{severity}",
                )
                blocks.append({"dataset": f"cifar10c:{corruption}/{severity}", **res})
            out += blocks
            total = sum(b["n"] for b in blocks)
            correct = sum(b["correct"] for b in blocks)
            loss = sum(b["loss"] * b["n"] for b in blocks) / total
            confidence = sum(b["mean_confidence"] * b["n"] for b in blocks) / total
            out.append(
                {
                    "dataset": key,
                    "accuracy": correct / total,
                    "loss": loss,
                    "mean_confidence": confidence,
                    "correct": correct,
                    "n": total,
                }
            )
        else:
            data = open_dataset(parsed, download=download, limit=limit, progress=progress)
            res = evaluate_accuracy(
                model, data, batch_size=batch_size, amp=amp, progress=progress, desc=key, check=True
            )
            out.append({"dataset": key, **res})
        if log:
            log(_line(out[-1]))
    return out


def _line(r: dict[str, Any]) -> str:
    return f"{r['dataset']}: accuracy {100 * r['accuracy']:.2f}% ({r['correct']}/{r['n']}), loss {r['loss']:.4f}"


def result_rows(
    evaluations: Iterable[dict[str, Any]],
    model: nn.Module,
    *,
    model_name: str | None = None,
    seed: int | None = None,
    train_on: str = "full",
    evaluate_on: str = "full",
    experiment: str = "",
    checkpoint: str | os.PathLike[str] | None = None,
    notes: str = "",
    metrics: Sequence[str] = ("accuracy", "loss"),
) -> list[dict[str, str]]:
    """Rows for :func:`~overinterp.results.append_results`, one per evaluation × metric.

    A model loaded from a file (``source_sha256``, :meth:`~overinterp.Classifier.record_source`)
    puts that file's sha256 into ``notes`` and, without ``checkpoint``, its path into ``checkpoint``."""
    fingerprint = model_fingerprint(model)
    sha = getattr(model, "source_sha256", None)
    if sha:
        notes = f"{notes}; source sha256 {sha}" if notes else f"source sha256 {sha}"
    if checkpoint is None:
        checkpoint = getattr(model, "source_file", None)
    arch = "ensemble" if hasattr(model, "combine") else getattr(model, "arch", None) or type(model).__name__
    name = model_name or getattr(model, "name", None) or arch
    rows = []
    for e in evaluations:
        for metric in metrics:
            rows.append(
                make_row(
                    experiment=experiment,
                    model=name,
                    arch=arch,
                    fingerprint=fingerprint,
                    checkpoint="" if checkpoint is None else os.fspath(checkpoint),
                    train_on=train_on,
                    evaluate_on=evaluate_on,
                    dataset=e["dataset"],
                    seed=seed,
                    metric=metric,
                    value=e[metric],
                    n=e["n"],
                    notes=notes,
                )
            )
    return rows
