"""Model registry: ``create_model(name, …)`` returns a :class:`~overinterp.Classifier`."""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from overinterp._memory import check_fits
from overinterp.errors import UserInputError

__all__ = ["register_model", "list_models", "get_model_entry", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: a builder ``(num_classes, **kwargs) -> nn.Module``."""

    name: str
    builder: Callable[..., nn.Module]
    description: str
    #: state_dict key prefixes to strip when importing third-party checkpoints
    strip_prefixes: tuple[str, ...] = ("module.",)
    #: option → (lowest, highest) allowed value (``None``: unbounded); integer options
    #: without an entry must be >= 1
    bounds: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str, description: str = "", *, bounds: Mapping[str, tuple[float | None, float | None]] | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder(num_classes=…, **kwargs) -> nn.Module`` under ``name``.

    The builder's keyword arguments are the architecture's options; their defaults give
    their types, and ``bounds`` their allowed ranges (integer options default to >= 1).
    """

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = description or (builder.__doc__ or "").strip().splitlines()[0:1]
        _REGISTRY[name] = ModelEntry(
            name, builder, doc if isinstance(doc, str) else "".join(doc), bounds=dict(bounds or {})
        )
        return builder

    return wrap


def list_models() -> list[str]:
    """Names accepted by ``create_model``, sorted."""
    return sorted(_REGISTRY)


def get_model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}") from None


def _check_value(entry: ModelEntry, key: str, value: Any, default: Any) -> None:
    """``value`` has the type of the option's ``default`` and lies in its declared bounds."""
    name = f"model {entry.name}"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise UserInputError(f"{name}: option {key} is true or false, got {value!r}")
        return
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"{name}: option {key} is an integer, got {value!r}")
        lo, hi = entry.bounds.get(key, (1, None))
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UserInputError(f"{name}: option {key} is a finite number, got {value!r}")
        lo, hi = entry.bounds.get(key, (None, None))
    else:
        return
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        span = f">= {lo:g}" if hi is None else f"<= {hi:g}" if lo is None else f"in [{lo:g}, {hi:g}]"
        raise UserInputError(f"{name}: option {key} must be {span}, got {value!r}")


def check_options(name: str, num_classes: int, kwargs: Mapping[str, Any]) -> None:
    """Refuse options ``name``'s builder does not take, values of the wrong type or out of their
    bounds, and a network whose weights would not fit in this machine's memory — before any
    memory is allocated (the network is first built on the ``meta`` device)."""
    entry = get_model_entry(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserInputError(f"model {name}: num_classes must be an integer >= 1, got {num_classes!r}")
    params = inspect.signature(entry.builder).parameters
    options = {k: p for k, p in params.items() if k != "num_classes" and p.kind is not p.VAR_KEYWORD}
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(options))
        if unknown:
            known = ", ".join(sorted(options)) or "none"
            raise UserInputError(f"model {name} has no option {', '.join(unknown)}; its options: {known}")
    for key, value in kwargs.items():
        if key in options:
            _check_value(entry, key, value, options[key].default)
    try:
        with torch.device("meta"):
            shell = entry.builder(num_classes=num_classes, **kwargs)
    except (ValueError, TypeError) as exc:  # the builder's own argument checks
        raise UserInputError(f"model {name} cannot be built with {_given(kwargs)}: {exc}") from None
    except (RuntimeError, NotImplementedError):
        return  # ops without a meta version (or bad sizes): build_network's real build says which
    nbytes = sum(t.numel() * t.element_size() for t in (*shell.parameters(), *shell.buffers()))
    given = "".join(f", {k}={v!r}" for k, v in kwargs.items())
    check_fits(nbytes, f"model {name} (num_classes={num_classes}{given})")


def _given(kwargs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "its defaults"


def build_network(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    """``name``'s network, its options checked first (:func:`check_options`)."""
    check_options(name, num_classes, kwargs)
    try:
        return get_model_entry(name).builder(num_classes=num_classes, **kwargs)
    except (RuntimeError, ValueError, TypeError) as exc:  # e.g. a negative size within declared bounds
        raise UserInputError(f"model {name} cannot be built with {_given(kwargs)}: {exc}") from None
