"""Backward-selection methods, one module each, all behind :func:`overinterp.backselect`."""

from .adaptive import Adaptive
from .base import Method, MethodOutput, Problem
from .exact import Exact
from .gradient import BatchedGradient
from .kstep import KStep
from .screened import Screened

__all__ = ["Method", "MethodOutput", "Problem", "Exact", "BatchedGradient", "KStep", "Adaptive", "Screened"]

_BY_NAME: dict[str, type[Method]] = {m.name: m for m in (Exact, BatchedGradient, KStep, Adaptive, Screened)}


def method_from_description(description: dict) -> Method:
    """Rebuild a method from ``method.describe()`` (``{"name": …, "params": {…}}``)."""
    name = description.get("name") if isinstance(description, dict) else None
    if name not in _BY_NAME:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(_BY_NAME))}")
    return _BY_NAME[name](**(description.get("params") or {}))


__all__ += ["method_from_description"]
