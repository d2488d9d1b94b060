"""The method registry: every backward-selection method by name, and what is generated from it.

A method registers itself with :func:`register` (a class decorator) in its own
module; :mod:`overinterp.sis.methods` imports the built-in modules and any other
module of the package, so adding a method is one new module. The factory
(:func:`make_method`), the trace's method description
(:func:`method_from_description`), the command line's ``--method`` choices and
flags (``overinterp.cli._common``), the audit's candidate ladder
(:func:`audit_ladder`) and the forward-only list (:func:`forward_only_methods`)
all read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from overinterp.sis.methods.base import GradientsUnavailableError, Method, ParamSpec

__all__ = [
    "register",
    "unregister",
    "make_method",
    "method_from_description",
    "method_names",
    "method_classes",
    "method_params",
    "audit_ladder",
    "forward_only_methods",
    "unfaithful_methods",
    "check_model_supports",
]

_BY_NAME: dict[str, type[Method]] = {}

M = TypeVar("M", bound=type)


def register(cls: M) -> M:
    """Class decorator: add a :class:`Method` subclass to the registry under ``cls.name``.

    Refuses a second class under a taken name and a class without a name.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"only Method subclasses can be registered, got {cls!r}")
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name or name == "auto":
        raise ValueError(f"{cls.__name__} needs a class attribute `name` (a non-empty string other than 'auto')")
    if name in _BY_NAME and _BY_NAME[name] is not cls:
        raise ValueError(f"a method named {name!r} is already registered ({_BY_NAME[name].__qualname__})")
    cls.param_specs()  # every field's annotation must resolve
    _BY_NAME[name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method from the registry (tests that register a throwaway method)."""
    _BY_NAME.pop(name, None)


def make_method(name: str, **params: Any) -> Method:
    """The one method factory: ``make_method("adaptive", tail=0.1)``.

    ``params`` are the method's declared parameters; unknown names are refused
    with the parameters the method takes. Every command line and every trace's
    method description (:func:`method_from_description`) builds methods here.
    """
    if name not in _BY_NAME:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(_BY_NAME))}")
    cls = _BY_NAME[name]
    fields = [p.name for p in cls.param_specs()]
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise ValueError(
            f"method {name!r} takes no parameter {', '.join(unknown)}; its parameters: {', '.join(fields) or 'none'}"
        )
    return cls(**params)


def method_from_description(description: Mapping[str, Any]) -> Method:
    """Rebuild a method from ``method.describe()`` (``{"name": …, "params": {…}}``).

    A parameter the description lacks (one added after it was written) takes its declared
    ``absent`` value, the one that reproduces what the file's run did, not today's default."""
    name = description.get("name") if isinstance(description, Mapping) else None
    params = dict(description.get("params") or {}) if isinstance(description, Mapping) else {}
    cls = _BY_NAME.get(str(name))
    if cls is not None and params:
        for spec in cls.param_specs():
            if spec.name not in params and spec.absent != spec.default:
                params[spec.name] = spec.absent
    return make_method(str(name), **params)


def method_names() -> list[str]:
    """The names :func:`make_method` takes, in registration order (the command line's ``--method`` choices)."""
    return list(_BY_NAME)


def method_classes() -> dict[str, type[Method]]:
    """Name → method class of every registered method (a copy)."""
    return dict(_BY_NAME)


def method_params(name: str) -> list[ParamSpec]:
    """The declared parameters of method ``name``."""
    return _BY_NAME[name].param_specs()


def audit_ladder() -> tuple[tuple[str, dict[str, Any]], ...]:
    """The audit's candidate methods, most faithful first: ``(name, params)`` of each method with a ``ladder``."""
    ranked = sorted(
        (cls.ladder[0], i, n, dict(cls.ladder[1])) for i, (n, cls) in enumerate(_BY_NAME.items()) if cls.ladder
    )
    return tuple((n, p) for _, _, n, p in ranked)


def forward_only_methods() -> list[str]:
    """Methods that take forward passes only with their defaults (usable on ONNX, TFLite, any black box):
    the audit's candidates first (most faithful first), then the others in registration order."""
    ladder = [n for n, _ in audit_ladder()]
    names = ladder + [n for n in _BY_NAME if n not in ladder]
    return [n for n in names if not _defaults(_BY_NAME[n]).needs_gradients]


def unfaithful_methods() -> frozenset[str]:
    """Methods the frontier measured as not faithful (``faithful = False``)."""
    return frozenset(n for n, cls in _BY_NAME.items() if not cls.faithful)


def check_model_supports(method: Method, model: Any) -> None:
    """Refuse a forward-only model (``model.supports_gradients is False``) when ``method`` needs gradients.

    Raises:
        GradientsUnavailableError: naming the forward-only methods.
    """
    if getattr(model, "supports_gradients", True) is not False or not method.needs_gradients:
        return
    who = getattr(model, "name", None) or type(model).__name__
    fmt = getattr(model, "format", None)
    raise GradientsUnavailableError(
        f"method {method.name!r} needs the model's gradients, but {who} is forward-only"
        + (f" ({fmt})" if fmt else "")
        + f"; use a forward-only method: {', '.join(forward_only_methods())}"
    )


def _defaults(cls: type[Method]) -> Method:
    """An instance of ``cls`` with its defaults."""
    return cls()
