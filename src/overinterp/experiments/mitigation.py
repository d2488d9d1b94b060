"""Mitigating overinterpretation with input dropout (paper §4.4, beside ensembling).

:func:`input_dropout_mitigation` trains one architecture with and without input
dropout (:attr:`~overinterp.training.TrainConfig.input_dropout`) for each seed,
and reports for each model its test accuracy and the mean size of its SIS at
τ = 0.99 on a few test images — backward selection by
:class:`~overinterp.sis.methods.fast.Fast`, FindSIS re-verified with the model.
Optionally the dropout-trained model is also scored through
:class:`~overinterp.models.dropout.InputDropoutClassifier` (predictions averaged
over fixed dropout masks at inference). A model that overinterprets is confident
on few pixels: a larger mean SIS is the mitigation's effect.

Rows (``experiment`` default ``mitigation``) go to the results file:
``accuracy`` and ``loss`` on the test images, ``sis_size_mean`` (mean SIS size
as a fraction of the features, over the images whose full-image confidence
reaches τ; as in :mod:`overinterp.experiments.robust`) and
``confident_fraction`` (of the SIS images). Models are named
``<arch>`` (no dropout), ``<arch>+input-dropout<rate>`` and
``<arch>+input-dropout<rate>+inference<K>``; ``train_on`` is ``full``.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from overinterp.data.base import LabeledImages, to_pixels
from overinterp.models.classifier import Classifier
from overinterp.models.dropout import InputDropoutClassifier, check_dropout_rate
from overinterp.results import append_results, model_fingerprint, read_results
from overinterp.sis import Fast, Method, backselect
from overinterp.training.evaluation import evaluate_accuracy

__all__ = ["input_dropout_mitigation", "sis_sizes"]


def sis_sizes(
    model: Classifier, images: Tensor, threshold: float = 0.99, *, method: Method | None = None, batch_size: int = 64
) -> dict[str, Any]:
    """SIS of ``model`` on pixels ``images`` ``(N, C, H, W)`` in ``[0, 1]`` at ``threshold``.

    Backward selection by ``method`` (default :class:`Fast`), FindSIS re-verified.
    Returns ``sizes`` (features per SIS, ``None`` below τ), ``fractions`` (of ``P``),
    ``sis_size_mean`` (mean fraction over images with a SIS; NaN if none),
    ``with_sis``, ``confident_fraction``, ``n``, ``seconds``.
    """
    t0 = time.perf_counter()
    model.eval()
    trace = backselect(model, images, method=method or Fast(), batch_size=batch_size, progress=False)
    res = trace.find_sis(threshold, model, images, batch_size=batch_size)
    p = trace.num_features.tolist()
    fractions = [s / p[i] for i, s in enumerate(res.sizes) if s is not None]
    return {
        "sizes": res.sizes,
        "fractions": fractions,
        "sis_size_mean": sum(fractions) / len(fractions) if fractions else math.nan,
        "with_sis": len(fractions),
        "confident_fraction": len(fractions) / max(1, len(images)),
        "n": len(images),
        "seconds": time.perf_counter() - t0,
    }


def _recorded(results: str | os.PathLike[str], common: dict[str, Any]) -> bool:
    """Whether ``results`` already holds this model's rows of this setting (same fingerprint, seed, notes)."""
    if not Path(results).is_file():
        return False
    keys = ("experiment", "model", "fingerprint", "seed", "notes", "dataset")
    return any(
        all(str(r.get(k) if r.get(k) is not None else "") == str(common[k]) for k in keys)
        for r in read_results(results)
    )


def _as_labeled(data: Any, what: str) -> LabeledImages:
    if isinstance(data, LabeledImages):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return LabeledImages(data[0], torch.as_tensor(data[1]).long(), None, name=what, source=what)
    raise TypeError(f"{what} must be LabeledImages or an (images, labels) pair, got {type(data).__name__}")


def input_dropout_mitigation(
    train: Any,
    test: Any,
    *,
    rate: float = 0.5,
    arch: str = "smallcnn",
    seeds: Sequence[int] = (0,),
    recipe: str = "fast",
    overrides: dict[str, Any] | None = None,
    out_dir: str | os.PathLike[str] = "runs/mitigation",
    threshold: float = 0.99,
    sis_images: int = 16,
    inference_samples: int = 0,
    method: Method | None = None,
    dataset_key: str | None = None,
    results: str | os.PathLike[str] | None = None,
    experiment: str = "mitigation",
    device: str | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = print,
) -> list[dict[str, Any]]:
    """Train ``arch`` with input dropout 0 and ``rate`` per seed; accuracy and mean SIS size of each.

    Args:
        train, test: labelled images (:class:`~overinterp.data.LabeledImages` or
            ``(images, labels)``), uint8 or float pixels in ``[0, 1]``.
        rate: the input-dropout rate of the mitigated models, in ``(0, 1)``.
        seeds: replicate seeds; each (rate, seed) trains into its own resumable
            run folder ``out_dir/<arch>-dropout<rate>-seed<seed>``.
        recipe, overrides: training recipe and overridden fields (e.g. ``epochs``).
        threshold: the SIS threshold τ.
        sis_images: SIS on the first this many test images.
        inference_samples: ``K > 0`` also scores each dropout-trained model through
            ``InputDropoutClassifier(model, rate, samples=K, seed=seed)``.
        method: backward-selection method (default :class:`Fast`).
        dataset_key: the test set's name in the results (default its ``meta["key"]`` or name).

    Returns:
        One dict per model: ``model``, ``seed``, ``rate``, ``inference_samples``,
        ``accuracy``, ``loss``, ``n``, ``sis_size_mean``, ``with_sis``,
        ``confident_fraction``, ``sis_n``, ``sizes``, ``run_dir``, ``train_seconds``.
    """
    from overinterp.training.trainer import make_config, train_classifier

    rate = check_dropout_rate(rate, "rate")
    if rate == 0:
        raise ValueError("rate must be > 0: the models without input dropout are trained anyway")
    if isinstance(sis_images, bool) or not isinstance(sis_images, int) or sis_images < 1:
        raise ValueError(f"sis_images must be a positive integer, got {sis_images!r}")
    if isinstance(inference_samples, bool) or not isinstance(inference_samples, int) or inference_samples < 0:
        raise ValueError(f"inference_samples must be an integer >= 0, got {inference_samples!r}")
    if not seeds:
        raise ValueError("no seeds given")
    train_set, test_set = _as_labeled(train, "train"), _as_labeled(test, "test")
    key = dataset_key or str(test_set.meta.get("key") or test_set.name)
    sis_pixels = to_pixels(test_set.images[:sis_images]).float()
    say = log or (lambda _msg: None)
    out: list[dict[str, Any]] = []
    for seed in seeds:
        for r in (0.0, rate):
            config = make_config(recipe, arch=arch, seed=int(seed), input_dropout=r, **(overrides or {}))
            run_dir = Path(out_dir) / f"{arch}-dropout{r:g}-seed{seed}"
            t0 = time.perf_counter()
            trained = train_classifier(config, train_set, None, run_dir, device=device, progress=progress)
            train_seconds = time.perf_counter() - t0
            base = trained.model.cpu().eval()
            name = arch if r == 0 else f"{arch}+input-dropout{r:g}"
            variants: list[tuple[str, Classifier, int]] = [(name, base, 0)]
            if r > 0 and inference_samples:
                wrapped = InputDropoutClassifier(base, r, samples=inference_samples, seed=int(seed))
                variants.append((f"{name}+inference{inference_samples}", wrapped, inference_samples))
            for label, model, k in variants:
                ev = evaluate_accuracy(model, test_set.images, test_set.labels)
                sis = sis_sizes(model, sis_pixels, threshold, method=method)
                rec = {
                    "model": label,
                    "arch": arch,
                    "seed": int(seed),
                    "rate": r,
                    "inference_samples": k,
                    "accuracy": ev["accuracy"],
                    "loss": ev["loss"],
                    "n": ev["n"],
                    "sis_size_mean": sis["sis_size_mean"],
                    "with_sis": sis["with_sis"],
                    "confident_fraction": sis["confident_fraction"],
                    "sis_n": sis["n"],
                    "sizes": sis["sizes"],
                    "run_dir": str(run_dir),
                    "train_seconds": round(train_seconds, 1),
                    "sis_seconds": round(sis["seconds"], 1),
                }
                out.append(rec)
                say(
                    f"{label} seed {seed}: accuracy {100 * rec['accuracy']:.2f}% on {rec['n']}; mean SIS "
                    f"{100 * rec['sis_size_mean']:.2f}% of pixels over {rec['with_sis']}/{rec['sis_n']} images "
                    f"with f ≥ {threshold} (train {train_seconds:.0f} s, SIS {sis['seconds']:.0f} s)"
                )
                if results is not None:
                    common = {
                        "experiment": experiment,
                        "model": label,
                        "arch": arch,
                        "fingerprint": model_fingerprint(model),
                        "checkpoint": str(trained.checkpoint or ""),
                        "train_on": "full",
                        "evaluate_on": "full",
                        "dataset": key,
                        "seed": int(seed),
                        "notes": f"input dropout {r:g} in training ({recipe} recipe, {config.epochs} epochs, "
                        f"{len(train_set)} images)"
                        + (f", {k} dropout masks at inference" if k else "")
                        + f"; SIS at tau={threshold} by {(method or Fast()).name} on the first {sis['n']} test images",
                    }
                    rows = [
                        {**common, "metric": "accuracy", "value": rec["accuracy"], "n": rec["n"]},
                        {**common, "metric": "loss", "value": rec["loss"], "n": rec["n"]},
                        {**common, "metric": "confident_fraction", "value": rec["confident_fraction"], "n": sis["n"]},
                    ]
                    if rec["with_sis"]:
                        rows.append(
                            {**common, "metric": "sis_size_mean", "value": rec["sis_size_mean"], "n": rec["with_sis"]}
                        )
                    if not _recorded(results, common):  # a rerun (training resumes) appends no row twice
                        append_results(results, rows)
    return out
