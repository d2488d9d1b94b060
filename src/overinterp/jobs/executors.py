"""Executors by name: ``local`` (:class:`~overinterp.jobs.executor.LocalExecutor`),
``ray`` (:class:`~overinterp.jobs.ray_executor.RayExecutor`, needs ``overinterp[ray]``;
imported on first use), and any registered with :func:`register_executor`.

The contract lives in :mod:`overinterp.jobs.executor`, which no executor module
imports back from here: no import cycle.
"""

from __future__ import annotations

from typing import Any, Callable

from overinterp.jobs.executor import Executor, LocalExecutor

__all__ = ["register_executor", "get_executor", "list_executors"]


_EXECUTORS: dict[str, Callable[..., Executor]] = {"local": LocalExecutor}


def register_executor(name: str, factory: Callable[..., Executor]) -> None:
    _EXECUTORS[name] = factory


def list_executors() -> list[str]:
    return sorted(set(_EXECUTORS) | {"ray"})


def get_executor(name: str, **options: Any) -> Executor:
    """An executor by name: ``local`` or ``ray`` (needs ``pip install 'overinterp[ray]'``)."""
    if name == "ray" and "ray" not in _EXECUTORS:
        try:
            from overinterp.jobs.ray_executor import RayExecutor
        except ImportError as exc:
            raise RuntimeError(
                f"the ray executor needs Ray: pip install 'overinterp[ray]' (or pip install ray); import failed: {exc}"
            ) from exc
        register_executor("ray", RayExecutor)
    if name not in _EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; choose one of {', '.join(list_executors())}")
    return _EXECUTORS[name](**options)
