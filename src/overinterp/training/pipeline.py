"""The one "open model + data + labels and validate them" step, and the pipeline check.

Every command that runs a model on a dataset (``backselect``, ``backselect-dataset``,
``audit``, :func:`overinterp.audit`) goes through :func:`validate_inputs`: finite
pixels, a network that can take the images (:func:`~overinterp.models.predict.probe_model`)
and labels that are classes of the model. :func:`open_inputs` also opens a model spec and a
dataset spec, once.

:func:`check_pipeline` asks whether the model, as declared, sees the images the way it
was trained to: on labelled images its accuracy must be clearly above chance (a one-sided
binomial test of ``correct`` against ``1/K``), and on any images its predictions must not
collapse onto one class. A failure almost always means a mis-declared pipeline (input
range, preprocessing, channel layout, class order), not a bad model; the message names
the spec options that fix each cause. ``force=True`` turns the refusal into a warning.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from overinterp.data.base import LabeledImages
from overinterp.errors import UserInputError
from overinterp.models.predict import check_finite_images, check_labels, predict_logits, probe_model

__all__ = [
    "ALPHA",
    "COLLAPSE_SHARE",
    "SKEW_TV",
    "PipelineCheck",
    "PipelineError",
    "PipelineWarning",
    "check_pipeline",
    "validate_pipeline",
    "validate_inputs",
    "open_inputs",
    "Inputs",
    "is_labelled",
    "FIXES",
]

#: significance level of the one-sided binomial test "accuracy > 1/K"
ALPHA = 0.01
#: predictions collapsed: one class takes at least this share of them (and far more than its share of labels)
COLLAPSE_SHARE = 0.9
#: fewest predictions the collapse check judges (fewer cannot tell a collapse from a one-class sample)
COLLAPSE_MIN = 8
#: predictions skewed away from the labels: total variation distance of the two class histograms
SKEW_TV = 0.3
#: fewest labelled predictions the skew check judges
SKEW_MIN = 20

#: the likely causes of a broken pipeline and the spec options that fix each (docs/how-to/model-formats.md)
FIXES = (
    "input range (a model file that takes 0-255 pixels: add ?range=0:255 to the model spec)",
    "preprocessing (a network trained on normalised inputs: ?preprocessing=imagenet or ?mean=...&std=...)",
    "channel layout (?layout=nhwc or ?layout=nchw)",
    "class order (the dataset's labels must be the model's class indices 0..K-1)",
)


class PipelineError(UserInputError):
    """The model does not see the images as it should (see :func:`check_pipeline`)."""


class PipelineWarning(UserWarning):
    """:func:`check_pipeline` failed but the caller went on (``force=True``, or ``evaluate``)."""


def is_labelled(data: LabeledImages) -> bool:
    """Whether ``data`` carries true labels (unlabelled image folders store ``-1``)."""
    return not data.meta.get("unlabelled", False) and not (len(data) and bool((data.labels < 0).all()))


@dataclass(frozen=True)
class PipelineCheck:
    """What :func:`check_pipeline` measured.

    ``correct``/``p_value``: ``None`` without labels; ``top_class``/``top_share``: the most
    predicted class and its share of the predictions; ``label_share``: that class's share of
    the labels (``None`` without labels); ``problem``: why the pipeline looks broken, else ``None``.
    """

    n: int
    num_classes: int
    correct: int | None
    p_value: float | None
    top_class: int
    top_share: float
    label_share: float | None
    problem: str | None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def accuracy(self) -> float | None:
        return None if self.correct is None else self.correct / self.n

    def message(self, where: str = "", override: str = "To audit anyway, rerun with force=True.") -> str:
        """One line: what failed, the likely causes with their fixes, and ``override`` (what to do instead)."""
        prefix = f"{where}: " if where else ""
        return (
            f"{prefix}{self.problem} - the pipeline looks broken, not the model. Likely causes: "
            + "; ".join(FIXES)
            + f". {override}"
        )


def check_pipeline(logits: Tensor, labels: Tensor | None, *, alpha: float = ALPHA) -> PipelineCheck:
    """Judge a model's predictions ``logits`` ``(N, K)`` on images with ``labels`` ``(N,)``
    (``None`` or all ``-1``: unlabelled).

    Refused (``problem`` set) when

    * labelled: the one-sided binomial test of ``correct`` successes in ``N`` against ``1/K``
      does not reject at ``alpha`` although a perfect model would on ``N`` images (a sample
      too small to tell is never refused on accuracy);
    * labelled, ``N >= 20``: the predictions are skewed away from the labels - the total
      variation distance between the predicted-class and the label histograms is at least
      :data:`SKEW_TV` (a model that is right on a share ``a`` of the images is at most
      ``1 - a`` away, so only a model at most 70% right whose errors pile onto some classes
      is refused: a 0-255 model fed [0, 1] pixels, a network without its normalisation);
    * any data, ``N >= 8`` and ``K > 2``: one class takes at least 90% of the predictions while
      it is under half of the labels (unlabelled: always).
    """
    from scipy.stats import binom

    if logits.dim() != 2 or logits.shape[0] == 0:
        raise ValueError(f"need logits (N, K) with N >= 1, got {tuple(logits.shape)}")
    n, k = int(logits.shape[0]), int(logits.shape[1])
    pred = logits.argmax(1).cpu()
    counts = torch.bincount(pred, minlength=k)
    top = int(counts.argmax())
    top_share = float(counts[top]) / n
    has_labels = labels is not None and labels.numel() == n and bool((labels >= 0).all())
    correct = p = label_share = None
    problem = None
    chance = 1.0 / max(k, 1)
    if has_labels:
        y = labels.to(torch.int64).cpu()  # type: ignore[union-attr]
        correct = int((pred == y).sum())
        p = float(binom.sf(correct - 1, n, chance))  # P(X >= correct) under chance
        label_counts = torch.bincount(y, minlength=k)[:k]
        label_share = float(label_counts[top]) / n
        testable = chance**n < alpha  # a perfect model would be significant
        over = (counts - label_counts).double() / n
        worst = int(over.argmax())
        if testable and p >= alpha:
            problem = (
                f"accuracy {100 * correct / n:.1f}% ({correct}/{n}) is not clearly above chance "
                f"(1/{k} = {100 * chance:.1f}%; one-sided binomial p = {p:.2g})"
            )
        elif n >= SKEW_MIN and float(over.clamp(min=0).sum()) >= SKEW_TV:
            problem = (
                f"accuracy {100 * correct / n:.1f}% ({correct}/{n}) with predictions skewed away from the labels: "
                f"class {worst} is predicted for {100 * float(counts[worst]) / n:.0f}% of the images but is "
                f"{100 * float(label_counts[worst]) / n:.0f}% of the labels (distance between the histograms "
                f"{float(over.clamp(min=0).sum()):.2f} >= {SKEW_TV})"
            )
    if problem is None and n >= COLLAPSE_MIN and k > 2 and top_share >= COLLAPSE_SHARE:
        if label_share is None or label_share < 0.5:
            problem = (
                f"the predictions collapse onto one class: {100 * top_share:.0f}% of {n} images are predicted "
                f"class {top}" + ("" if label_share is None else f" (it is {100 * label_share:.0f}% of the labels)")
            )
    return PipelineCheck(n, k, correct, p, top, top_share, label_share, problem)


def validate_pipeline(
    model: Callable[[Tensor], Tensor],
    images: Tensor,
    labels: Tensor | None,
    *,
    where: str = "",
    force: bool = False,
    batch_size: int = 256,
    override: str = "To audit anyway, rerun with force=True.",
) -> PipelineCheck:
    """:func:`check_pipeline` on ``model``'s predictions for ``images`` ``(N, C, H, W)``.

    Raises:
        PipelineError: the check failed and not ``force`` (the message is one line naming
            the likely causes, their fixes and ``override``); with ``force`` a
            :class:`PipelineWarning` is issued instead.
    """
    logits = predict_logits(model, images, batch_size=batch_size, desc=where or "pipeline check")
    check = check_pipeline(logits.float(), labels)
    if not check.ok:
        if not force:
            raise PipelineError(check.message(where, override))
        warnings.warn(check.message(where, "Going on (forced)."), PipelineWarning, stacklevel=2)
    return check


def validate_inputs(
    model: Callable[[Tensor], Tensor],
    data: LabeledImages | Tensor,
    labels: Tensor | None = None,
    *,
    positions: Any = None,
    where: str = "",
) -> int:
    """The shared validation of a model and its images; returns the model's number of classes.

    ``data``: :class:`LabeledImages` or images ``(N, C, H, W)`` with ``labels`` ``(N,)`` (or
    ``None``); ``positions``: only these images' labels are checked (a job's selection).

    Raises:
        FloatingPointError: non-finite pixels.
        UserInputError: a network that cannot take the images, or labels that are not its classes.
    """
    if isinstance(data, LabeledImages):
        images = data.images
        labels = data.labels if is_labelled(data) else None
    else:
        images = data
    check_finite_images(images, where or "images")
    num_classes = probe_model(model, tuple(images.shape[1:]), where=where)
    if labels is not None:
        picked = labels if positions is None else labels[torch.as_tensor(list(positions), dtype=torch.long)]
        check_labels(picked, num_classes, where or "labels")
    return num_classes


@dataclass
class Inputs:
    """A model and its dataset, opened once and validated (:func:`open_inputs`)."""

    model: Any
    data: LabeledImages
    num_classes: int
    model_spec: Any = None
    dataset_spec: str | None = None

    @property
    def labelled(self) -> bool:
        return is_labelled(self.data)


def open_inputs(
    model: Any,
    data: Any,
    *,
    positions: Any = None,
    device: str | torch.device = "cpu",
    where: str = "",
) -> Inputs:
    """Open a model (a :class:`~overinterp.models.ModelSpec`, a spec string or a module) and a
    dataset (a spec string or path, or :class:`LabeledImages`) once, and validate them
    (:func:`validate_inputs`)."""
    from overinterp.data.specs import open_dataset, portable_spec
    from overinterp.models.spec import ModelSpec, parse_model_spec

    spec = None
    if isinstance(model, (str, os.PathLike)):
        spec = parse_model_spec(model, trust_code=True)  # given by the caller directly
    elif isinstance(model, ModelSpec):
        spec = model
    module = spec.load() if spec is not None else model
    if spec is not None and torch.device(device).type != "cpu":
        module = module.to(device)
    dataset_spec = None
    if isinstance(data, LabeledImages):
        opened = data
    else:
        dataset_spec = portable_spec(os.fspath(data))
        opened = open_dataset(dataset_spec)
    if where == "":
        where = f"dataset {dataset_spec or opened.name}"
    n = validate_inputs(module, opened, positions=positions, where=where)
    return Inputs(module, opened, n, spec, dataset_spec)
