"""The method declaration is the single source: a registered method appears everywhere.

A throwaway method registered here (one class, nothing else edited) must show up in
the command line's ``--method`` choices, its flags and ``--help``, the factory, the
audit's plan and a trace's save/load round trip. Wrong implementations these catch:
a hand-written flag table or help text in the CLI, a hard-coded method list or
ladder in the audit, a ``planned_cost`` looked up with ``getattr`` (a method without
one would silently get no cost), ``needs_gradients`` that disagrees with the passes
a method plans, declared bounds that the constructor does not enforce.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

from overinterp import backselect
from overinterp.cli import _common
from overinterp.experiments.audit import Throughput, format_plan, plan_audit
from overinterp.sis.methods import (
    Method,
    MethodOutput,
    Problem,
    make_method,
    method_classes,
    method_from_description,
    method_names,
    param,
    register,
    unregister,
)
from overinterp.sis.methods.exact import run_exact
from overinterp.sis.trace import BackselectTrace
from reference import TinyCNN


@dataclass(frozen=True)
class Throwaway(Method):
    """Exact selection under another name, with one parameter of its own."""

    sharpness: int = param(3, help="a throwaway knob", low=2)

    name: ClassVar[str] = "throwaway"
    summary: ClassVar[str] = "a method registered by a test"
    faithfulness: ClassVar[str] = "as exact (it is exact)"
    ladder: ClassVar = (0.5, {"sharpness": 4})

    def __post_init__(self) -> None:
        if not isinstance(self.sharpness, int) or self.sharpness < 2:
            raise ValueError(f"sharpness must be an integer >= 2, got {self.sharpness!r}")

    def planned_cost(self, total: int) -> dict[str, int]:
        return {"forward_backward": 0, "forward": total * (total + 1) // 2}

    def run(self, problem: Problem, *, batch_size: int, progress: bool) -> MethodOutput:
        return run_exact(problem, batch_size=batch_size, progress=progress)


@pytest.fixture
def throwaway():
    register(Throwaway)
    try:
        yield Throwaway
    finally:
        unregister("throwaway")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="x")
    _common.add_method_options(p)
    return p


def test_a_registered_method_appears_everywhere(throwaway, tmp_path):
    assert "throwaway" in method_names()
    # command line: choice, flag (type and bounds from the declaration), help text
    p = _parser()
    text = " ".join(p.format_help().split())  # argparse wraps lines
    assert "throwaway: a method registered by a test" in text
    assert "--sharpness" in text and "throwaway: a throwaway knob (default 3)" in text
    m = _common.method_from_args(p.parse_args(["--method", "throwaway", "--sharpness", "5"]))
    assert m == Throwaway(5)
    with pytest.raises(SystemExit):
        p.parse_args(["--method", "throwaway", "--sharpness", "1"])  # below the declared bound
    with pytest.raises(ValueError, match="--sharpness applies to --method throwaway only"):
        _common.method_from_args(p.parse_args(["--method", "exact", "--sharpness", "5"]))
    # factory
    assert make_method("throwaway", sharpness=7) == Throwaway(7)
    # audit plan: a candidate at its declared place in the ladder, with its statement
    tp = Throughput(forwards_per_s=1000.0, fb_cost=2.0, batch_size=64, layout="channels_last", seconds=1.0)
    plan = plan_audit(model_name="m", dataset="d", num_features=16, available_images=10, throughput=tp)
    names = [r.method["name"] for r in plan.rows]
    assert names.index("exact") < names.index("throwaway") < names.index("fast")
    row = plan.rows[names.index("throwaway")]
    assert row.method == {"name": "throwaway", "params": {"sharpness": 4}}
    assert row.faithfulness == "as exact (it is exact)" and row.forward == 16 * 17 // 2
    assert "throwaway" in format_plan(plan)
    # trace round trip: the description rebuilds the same method through the registry
    model = TinyCNN(height=4, width=3).eval()
    trace = backselect(model, torch.rand(2, 3, 4, 3), method=Throwaway(6), progress=False)
    back = BackselectTrace.load(trace.save(tmp_path / "t.pt"))
    assert method_from_description(back.method) == Throwaway(6)


def test_gone_once_unregistered():
    assert "throwaway" not in method_names()
    assert "--sharpness" not in _parser().format_help()
    assert "throwaway" not in [
        r.method["name"]
        for r in plan_audit(
            model_name="m",
            dataset="d",
            num_features=16,
            available_images=10,
            throughput=Throughput(forwards_per_s=1000.0, fb_cost=2.0, batch_size=64, layout="cl", seconds=1.0),
        ).rows
    ]


def test_planned_cost_is_abstract():
    """A method without a cost model cannot even be built (the audit relies on every method having one)."""

    @dataclass(frozen=True)
    class NoCost(Method):
        name: ClassVar[str] = "nocost"

        def run(self, problem, *, batch_size, progress):  # pragma: no cover - never built
            raise AssertionError

    with pytest.raises(TypeError, match="planned_cost"):
        NoCost()


def test_registration_refuses_clashes():
    @dataclass(frozen=True)
    class Clash(Throwaway):
        name: ClassVar[str] = "exact"

    with pytest.raises(ValueError, match="already registered"):
        register(Clash)
    with pytest.raises(TypeError):
        register(int)


@pytest.mark.parametrize("name", list(method_classes()))
def test_needs_gradients_agrees_with_the_planned_passes(name):
    cls = method_classes()[name]
    variants = [cls()] + ([cls(head="gradient")] if name == "adaptive" else [])
    for m in variants:
        for total in (16, 100):  # (a 1-feature image may go to the exact tail alone)
            assert m.needs_gradients == (m.planned_cost(total)["forward_backward"] > 0), (m, total)


@pytest.mark.parametrize("name", list(method_classes()))
def test_declared_bounds_are_the_constructors(name):
    """Every declared bound/choice is enforced by the method itself (the CLI only mirrors it)."""
    cls = method_classes()[name]
    for spec in cls.param_specs():
        assert spec.help, f"{name}.{spec.name} has no help"
        assert spec.has_default, f"{name}.{spec.name} has no default"
        assert spec.accepts(spec.default)
        bad: list = []
        if spec.low is not None:
            bad.append(spec.low if spec.low_open else spec.low - 1)
        if spec.high is not None:
            bad.append(spec.high + 1)
        if spec.choices:
            bad.append("no-such-choice")
        for value in bad:
            assert not spec.accepts(value)
            with pytest.raises(ValueError):
                cls(**{spec.name: value})


def test_every_method_field_is_declared():
    for name, cls in method_classes().items():
        for f in dataclasses.fields(cls):
            assert "overinterp" in f.metadata, f"{name}.{f.name} is not declared with param()"
