"""Backward-selection methods, one module each, all behind :func:`overinterp.backselect`."""

from .adaptive import Adaptive
from .base import Method, MethodOutput, Problem
from .exact import Exact
from .gradient import BatchedGradient
from .kstep import KStep
from .screened import Screened

__all__ = ["Method", "MethodOutput", "Problem", "Exact", "BatchedGradient", "KStep", "Adaptive", "Screened"]
