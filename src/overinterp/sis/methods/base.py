"""What every backward-selection method receives and returns."""

from __future__ import annotations

import abc
import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Literal

import torch
from torch import Tensor

from overinterp.errors import UserInputError
from overinterp.sis.features import FeatureMap

__all__ = [
    "Problem",
    "MethodOutput",
    "Method",
    "ParamSpec",
    "param",
    "check_block_size",
    "GradientsUnavailableError",
    "append_output",
    "without_removed",
]

#: the ``dataclasses.field`` metadata key under which :func:`param` stores a parameter's declaration
PARAM_KEY = "overinterp"


def param(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    choices: tuple[Any, ...] | None = None,
    flag: str | None = None,
    cli: bool = True,
    absent: Any = dataclasses.MISSING,
) -> Any:
    """Declare one method parameter (a dataclass field with its metadata).

    Args:
        default: the default value.
        help: one line: what the parameter does (the command line's help reads it).
        low, high: inclusive bounds (``low_open``: ``low`` itself is refused).
        choices: the allowed values (for strings; ``Literal`` types give them too).
        flag: the command-line flag when not ``--`` + the name with ``-`` for ``_``.
        cli: ``False``: not offered on the command line (library-only settings).
        absent: for a parameter added after traces and job folders were written: the value that
            reproduces what those files ran (a description without the parameter means this value;
            :func:`~overinterp.sis.methods.registry.method_from_description` fills it in). Default:
            ``default``.
    """
    meta = {
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "choices": choices,
        "flag": flag,
        "cli": cli,
        "absent": default if absent is dataclasses.MISSING else absent,
    }
    return dataclasses.field(default=default, metadata={PARAM_KEY: meta})


@dataclass(frozen=True)
class ParamSpec:
    """A method parameter as declared by :func:`param` (the command line, the docs and tests read these).

    ``type``: ``int``, ``float``, ``bool`` or ``str`` (``None`` allowed when ``optional``).
    """

    name: str
    type: type
    optional: bool
    default: Any
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] | None = None
    flag: str | None = None
    cli: bool = True
    absent: Any = None  #: always set by :func:`param` (``default`` unless declared)

    @property
    def has_default(self) -> bool:
        return self.default is not dataclasses.MISSING

    @property
    def option(self) -> str:
        """The command-line flag."""
        return self.flag or "--" + self.name.replace("_", "-")

    def bounds_text(self) -> str:
        """``"an integer >= 1"``, ``"a number in (0, 1]"`` …"""
        if self.choices:
            return "one of " + ", ".join(map(str, self.choices))
        kind = "an integer" if self.type is int else "a number" if self.type is float else f"a {self.type.__name__}"
        if self.low is not None and self.high is not None:
            return f"{kind} in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        if self.low is not None:
            return f"{kind} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{kind} <= {self.high:g}"
        return kind

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` has the declared type and lies within the declared bounds/choices."""
        if value is None:
            return self.optional
        if self.choices is not None:
            return value in self.choices
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        if self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return False
        if self.type in (str, bool) and not isinstance(value, self.type):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and value > self.high)


def _param_spec(f: dataclasses.Field, hint: Any) -> ParamSpec:
    meta = dict(f.metadata.get(PARAM_KEY) or {"help": ""})
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        rest = [a for a in args if a is not type(None)]
        hint = rest[0]
    choices = meta.pop("choices", None)
    if typing.get_origin(hint) is Literal:
        choices = choices or typing.get_args(hint)
        hint = type(typing.get_args(hint)[0])
    default = f.default if f.default is not dataclasses.MISSING else dataclasses.MISSING
    meta.setdefault("absent", default)
    return ParamSpec(
        name=f.name,
        type=hint if isinstance(hint, type) else str,
        optional=optional,
        default=default,
        choices=tuple(choices) if choices else None,
        **meta,
    )


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
        """Refuse a per-step block size ``k`` larger than the largest feature count (:func:`check_block_size`)."""
        check_block_size(k, int(self.features.num_features.max()) if self.n else 0, method)

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


def check_block_size(k: int, num_features: int, method: str | None = None) -> None:
    """Refuse a block size ``k`` (features masked per step) that is not a positive integer or
    exceeds the ``num_features`` of each image (every block would mask the whole image at once)."""
    who = f"{method}: " if method else ""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"{who}k must be a positive integer (features masked per block), got {k!r}")
    if k > num_features:
        raise ValueError(
            f"{who}k = {k} is larger than the {num_features} features per image (it exceeds them: every block "
            f"would mask the whole image at once); choose k <= {num_features} (or larger features, e.g. a smaller "
            "patch count; the paper uses k = 100 on 299×299 = 89,401 pixels)"
        )


@dataclass
class MethodOutput:
    """Per-image removal order and log-odds, padded to ``Pmax``.

    ``order`` ``(N, Pmax)`` int64 (−1 pad), ``logodds`` ``(N, Pmax)`` float32
    (NaN where not evaluated), ``evaluated`` ``(N, Pmax)`` bool,
    ``num_features`` ``(N,)`` int64 (length of each order). Gradient-screened
    steps with exact scoring also give ``screen_rank`` / ``screen_width``
    ``(N, Pmax)`` int32 at each step's first position: the rank in the gradient
    screen of the step's exact best (``≥ width``: a recall candidate) and the
    screen's width (−1 elsewhere).
    """

    order: Tensor
    logodds: Tensor
    evaluated: Tensor
    num_features: Tensor
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    screen_rank: Tensor | None = None
    screen_width: Tensor | None = None


class Method(abc.ABC):
    """Base class of backward-selection methods (frozen dataclasses); a method declares everything about itself.

    A subclass is a frozen dataclass decorated with
    :func:`overinterp.sis.methods.registry.register`. It declares:

    - ``name``: its registry name (``--method`` on the command line);
    - its parameters as dataclass fields made with :func:`param` (type from the
      annotation, default, bounds, one-line help): the command line's flags and
      help, the factory and every trace's method description are generated
      from them (:meth:`param_specs`);
    - ``summary``: one line for ``--method``'s help;
    - ``needs_gradients``: whether it takes forward+backward passes (a class
      attribute, or a property when a parameter decides);
    - ``faithfulness``: a short statement of how close its orders are to exact's,
      pointing at the measurement (``bench/results/frontier.md``); ``faithful``:
      whether the audit may prefer it; ``ladder``: its place in the audit's
      candidate ladder (most faithful first) and the parameters tried there,
      ``None``: not a candidate;
    - :meth:`planned_cost` (abstract) and :meth:`run` (abstract).
    """

    name: ClassVar[str] = "method"
    summary: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = False
    faithfulness: ClassVar[str] = "not measured by the frontier (bench/results/frontier.md)"
    faithful: ClassVar[bool] = True
    ladder: ClassVar[tuple[float, dict[str, Any]] | None] = None

    @classmethod
    def param_specs(cls) -> list[ParamSpec]:
        """The declared parameters, in field order."""
        hints = typing.get_type_hints(cls)
        return [_param_spec(f, hints[f.name]) for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    def uses_gradients(self, total: int = 1024) -> bool:
        """Whether this method takes forward+backward passes (``needs_gradients``; ``total`` is ignored)."""
        return bool(self.needs_gradients)

    @abc.abstractmethod
    def planned_cost(self, total: int) -> dict[str, int]:
        """Passes the method makes on one image of ``total`` features:
        ``{"forward_backward": …, "forward": …}`` (the audit's cost model; tests pin it to the passes made)."""

    def params(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params()}

    @abc.abstractmethod
    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        """Backward selection on ``problem``; ``batch_size`` candidates (or images) per model call."""


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
    screen: list[Tensor | None] = [head.screen_rank, head.screen_width]
    if tail.screen_rank is not None and tail.screen_width is not None:
        screen = []
        for h_t, t_t in ((head.screen_rank, tail.screen_rank), (head.screen_width, tail.screen_width)):
            t = h_t.clone() if h_t is not None else torch.full_like(order, -1, dtype=torch.int32)
            t[rows[valid], dest[valid]] = t_t[valid]
            screen.append(t)
    return MethodOutput(
        order, logodds, evaluated, head.num_features + tail.num_features, stats or {}, screen[0], screen[1]
    )
