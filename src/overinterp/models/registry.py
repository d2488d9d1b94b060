"""Model registry: ``create_model(name, …)`` returns a :class:`~overinterp.Classifier`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

__all__ = ["register_model", "list_models", "get_model_entry", "ModelEntry"]


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture: a builder ``(num_classes, **kwargs) -> nn.Module``."""

    name: str
    builder: Callable[..., nn.Module]
    description: str
    #: state_dict key prefixes to strip when importing third-party checkpoints
    strip_prefixes: tuple[str, ...] = ("module.",)


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, description: str = "") -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: register ``builder(num_classes=…, **kwargs) -> nn.Module`` under ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        doc = description or (builder.__doc__ or "").strip().splitlines()[0:1]
        _REGISTRY[name] = ModelEntry(name, builder, doc if isinstance(doc, str) else "".join(doc))
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


def build_network(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    return get_model_entry(name).builder(num_classes=num_classes, **kwargs)
