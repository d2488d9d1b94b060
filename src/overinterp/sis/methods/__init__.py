"""Backward-selection methods, one module each, all behind :func:`overinterp.sis.backselect`.

Each method module defines one :class:`Method` subclass and registers it
(:func:`~overinterp.sis.methods.registry.register`); this package imports the
built-in ones (their order is the command line's ``--method`` order) and then
every other module in it, so adding a method is adding one module.
"""

import importlib
import pkgutil

from overinterp.sis.methods import registry
from overinterp.sis.methods.base import GradientsUnavailableError, Method, MethodOutput, ParamSpec, Problem, param
from overinterp.sis.methods.registry import *  # noqa: F403 - the registry functions
from overinterp.sis.methods.registry import _BY_NAME

# the built-in methods, in the command line's order
from overinterp.sis.methods.exact import Exact  # isort: skip
from overinterp.sis.methods.gradient import BatchedGradient  # isort: skip
from overinterp.sis.methods.kstep import KStep  # isort: skip
from overinterp.sis.methods.adaptive import Adaptive  # isort: skip
from overinterp.sis.methods.screened import Screened  # isort: skip
from overinterp.sis.methods.fast import Fast  # isort: skip

for _mod in sorted(m.name for m in pkgutil.iter_modules(__path__)):  # noqa: F405 - the package path
    if not _mod.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod}")  # any further method module registers itself

__all__ = [
    "GradientsUnavailableError",
    "Method",
    "MethodOutput",
    "ParamSpec",
    "Problem",
    "param",
    "Exact",
    "BatchedGradient",
    "KStep",
    "Adaptive",
    "Screened",
    "Fast",
    "_BY_NAME",
    *registry.__all__,
]
