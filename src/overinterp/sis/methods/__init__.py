"""Backward-selection methods, one module each, all behind :func:`overinterp.sis.backselect`."""

import dataclasses

from overinterp.sis.methods.adaptive import Adaptive
from overinterp.sis.methods.base import GradientsUnavailableError, Method, MethodOutput, Problem
from overinterp.sis.methods.exact import Exact
from overinterp.sis.methods.fast import Fast
from overinterp.sis.methods.gradient import BatchedGradient
from overinterp.sis.methods.kstep import KStep
from overinterp.sis.methods.screened import Screened

__all__ = [
    "GradientsUnavailableError",
    "Method",
    "MethodOutput",
    "Problem",
    "Exact",
    "BatchedGradient",
    "KStep",
    "Adaptive",
    "Screened",
    "Fast",
    "make_method",
]

_BY_NAME: dict[str, type[Method]] = {m.name: m for m in (Exact, BatchedGradient, KStep, Adaptive, Screened, Fast)}


def make_method(name: str, **params) -> Method:
    """The one method factory: ``make_method("adaptive", tail=0.1)``.

    ``params`` are the method's dataclass fields; unknown names are refused with
    the fields the method takes. Every command line and every trace's method
    description (:func:`method_from_description`) builds methods here.
    """
    if name not in _BY_NAME:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(_BY_NAME))}")
    cls = _BY_NAME[name]
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(
            f"method {name!r} takes no parameter {', '.join(unknown)}; its parameters: {', '.join(fields) or 'none'}"
        )
    return cls(**params)


def method_from_description(description: dict) -> Method:
    """Rebuild a method from ``method.describe()`` (``{"name": …, "params": {…}}``)."""
    name = description.get("name") if isinstance(description, dict) else None
    return make_method(str(name), **(description.get("params") or {}))


__all__ += ["method_from_description"]


def method_names() -> list[str]:
    """The names :func:`make_method` takes, in registration order (the command line's ``--method`` choices)."""
    return list(_BY_NAME)


__all__ += ["method_names"]


def method_classes() -> dict[str, type[Method]]:
    """Name → method class of every registered method (a copy)."""
    return dict(_BY_NAME)


__all__ += ["method_classes"]
