"""Backward-selection methods, one module each, all behind :func:`overinterp.backselect`."""

from .base import Method, MethodOutput, Problem
from .exact import Exact

__all__ = ["Method", "MethodOutput", "Problem", "Exact"]
