"""What every backward-selection method receives and returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

from overinterp.errors import UserInputError
from overinterp.sis.features import FeatureMap

__all__ = ["Problem", "MethodOutput", "Method", "GradientsUnavailableError", "append_output", "without_removed"]


class GradientsUnavailableError(UserInputError, TypeError):
    """A method that needs the model's gradients was given a forward-only model (ONNX, TFLite, any black box)."""


@dataclass
class Problem:
    """A validated backward-selection problem, all tensors on one device.

    Attributes:
        forward: ``(B, C, H, W)`` → logits ``(B, K)``; the model in eval mode.
        images: ``(N, C, H, W)`` inputs in the space the model takes.
        baseline: ``(C, H, W)`` masking value, same space.
        target: ``(N,)`` int64 target classes.
        features: the feature map.
        available: ``(N, Pmax)`` bool, features that may be removed; the others
            are masked from the start and never appear in the order (used by
            the SIS collection). ``None``: all features.
    """

    forward: Callable[[Tensor], Tensor]
    images: Tensor
    baseline: Tensor
    target: Tensor
    features: FeatureMap
    available: Tensor | None = None

    @property
    def n(self) -> int:
        return self.images.shape[0]

    def start_images(self) -> Tensor:
        """``(N, C, H, W)``: the images with the unavailable features already masked."""
        if self.available is None:
            return self.images.clone()
        masked = ~self.available.gather(1, self.features.groups.flatten(1)).view(self.n, 1, *self.images.shape[2:])
        return torch.where(masked, self.baseline, self.images)

    def check_block_size(self, k: int, method: str) -> None:
        """Refuse a per-step block size ``k`` larger than the largest feature count."""
        pmax = int(self.features.num_features.max()) if self.n else 0
        if k > pmax:
            raise ValueError(
                f"{method}: k = {k} is larger than the {pmax} features per image; "
                f"choose k <= {pmax} (or larger features, e.g. a smaller patch count)"
            )

    def available_counts(self) -> Tensor:
        """``(N,)`` int64 number of removable features per image."""
        if self.available is None:
            return self.features.num_features.clone()
        return self.available.sum(1)

    def remaining_table(self) -> Tensor:
        """``(N, Pmax)`` int64: each row's removable feature ids ascending, padded with Pmax."""
        pmax = self.features.max_features
        ids = torch.arange(pmax, device=self.images.device).expand(self.n, pmax)
        ok = ids < self.features.num_features.view(-1, 1)
        if self.available is not None:
            ok = ok & self.available
        # a stable sort keeps the ascending order of the kept ids and pushes the rest back
        key = torch.where(ok, ids, torch.full_like(ids, pmax))
        return torch.sort(key, dim=1, stable=True).values


@dataclass
class MethodOutput:
    """Per-image removal order and log-odds, padded to ``Pmax``.

    ``order`` ``(N, Pmax)`` int64 (−1 pad), ``logodds`` ``(N, Pmax)`` float32
    (NaN where not evaluated), ``evaluated`` ``(N, Pmax)`` bool,
    ``num_features`` ``(N,)`` int64 (length of each order).
    """

    order: Tensor
    logodds: Tensor
    evaluated: Tensor
    num_features: Tensor
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)


class Method:
    """Base class of backward-selection methods (frozen dataclasses).

    Subclasses set ``name`` and implement :meth:`run`; their dataclass fields
    are their parameters, recorded in every trace.
    """

    name: ClassVar[str] = "method"

    def uses_gradients(self, total: int = 1024) -> bool:
        """Whether this method takes forward+backward passes on an image of ``total`` features
        (read from its ``planned_cost``; a method without a cost model counts as forward-only)."""
        cost = getattr(self, "planned_cost", None)
        return bool(cost is not None and cost(int(total)).get("forward_backward", 0) > 0)

    def check_model(self, model: Any, problem: Problem | None = None) -> None:
        """Refuse a forward-only model (``model.supports_gradients is False``) when this method needs gradients.

        Raises:
            GradientsUnavailableError: naming the forward-only methods.
        """
        if getattr(model, "supports_gradients", True) is not False:
            return
        total = 1024 if problem is None or problem.n == 0 else int(problem.available_counts().max())
        if not self.uses_gradients(total):
            return
        from overinterp.sis.methods import method_classes  # the registry imports this module

        usable = [
            f"{n} (head=kstep)" if n == "adaptive" else n
            for n, cls in method_classes().items()
            if not _example(cls).uses_gradients()
        ]
        who = getattr(model, "name", None) or type(model).__name__
        fmt = getattr(model, "format", None)
        raise GradientsUnavailableError(
            f"method {self.name!r} needs the model's gradients, but {who} is forward-only"
            + (f" ({fmt})" if fmt else "")
            + f"; use a forward-only method: {', '.join(usable)}"
        )

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params()}

    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        raise NotImplementedError


def _example(cls: type[Method]) -> Method:
    """An instance of ``cls`` with its defaults (1 for fields that have none, e.g. ``k``)."""
    required = {
        f.name: 1
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    return cls(**required)


def without_removed(problem: Problem, out: MethodOutput) -> Problem:
    """The sub-problem left after ``out``: the same images with the features that
    ``out`` removed no longer available (they are masked from the start)."""
    device = problem.images.device
    n, pmax = out.order.shape
    col = torch.arange(pmax, device=device).view(1, -1)
    avail = col < problem.features.num_features.view(-1, 1)
    if problem.available is not None:
        avail = avail & problem.available
    gone = torch.zeros_like(avail)
    done = col < out.num_features.view(-1, 1)
    rows = torch.arange(n, device=device).view(-1, 1).expand(n, pmax)
    gone[rows[done], out.order[done]] = True
    return Problem(problem.forward, problem.images, problem.baseline, problem.target, problem.features, avail & ~gone)


def append_output(head: MethodOutput, tail: MethodOutput, stats: dict[str, Any] | None = None) -> MethodOutput:
    """``head``'s order followed by ``tail``'s (run on :func:`without_removed`)."""
    n, pmax = head.order.shape
    device = head.order.device
    col = torch.arange(pmax, device=device).view(1, -1)
    rows = torch.arange(n, device=device).view(-1, 1).expand(n, pmax)
    order, logodds, evaluated = head.order.clone(), head.logodds.clone(), head.evaluated.clone()
    dest = head.num_features.view(-1, 1) + col
    valid = col < tail.num_features.view(-1, 1)
    order[rows[valid], dest[valid]] = tail.order[valid]
    logodds[rows[valid], dest[valid]] = tail.logodds[valid]
    evaluated[rows[valid], dest[valid]] = tail.evaluated[valid]
    return MethodOutput(order, logodds, evaluated, head.num_features + tail.num_features, stats or {})
