"""Every method's ``planned_cost`` (the audit's cost model) equals the passes it actually makes."""

from __future__ import annotations

import pytest
import torch

import overinterp
from reference import TinyCNN

METHODS = [
    overinterp.Exact(),
    overinterp.KStep(4),
    overinterp.KStep(7),
    overinterp.Adaptive(step_fraction=0.3, tail=0.25),
    overinterp.Adaptive(step_fraction=0.1, tail=0.5, head="gradient"),
    overinterp.BatchedGradient(1),
    overinterp.BatchedGradient(5),
    overinterp.Fast(recall=0),
    overinterp.Fast(growth=0.0),
    overinterp.Fast(step_fraction=0.2, pool=3, screened=0.2, exact=0.1, width=4, recall=0),
    overinterp.Screened(rescore_top=3),
]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: repr(m)[:60])
@pytest.mark.parametrize("size", [5, 6])
def test_planned_cost_counts_the_passes_the_method_makes(method, size):
    model = TinyCNN(num_classes=3, height=size, width=size, seed=1)
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(size))
    trace = overinterp.backselect(model, x, method=method, progress=False)
    plan = method.planned_cost(size * size)
    assert trace.meta.get("evaluations", 0) == 3 * plan["forward"]
    assert trace.meta.get("forward_backward_passes", 0) == 3 * plan["forward_backward"]


@pytest.mark.parametrize("size", [5, 6])
def test_with_recall_the_plan_is_an_upper_bound(size):
    """Recall adds up to ``recall`` earlier-scored features per step (fewer when they are already
    screened in), so the plan bounds the passes from above, and from below by the plan without recall."""
    model = TinyCNN(num_classes=3, height=size, width=size, seed=1)
    x = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(size))
    method = overinterp.Fast(recall=4)
    trace = overinterp.backselect(model, x, method=method, progress=False)
    plan, without = method.planned_cost(size * size), overinterp.Fast(recall=0).planned_cost(size * size)
    assert 3 * without["forward"] <= trace.meta["evaluations"] <= 3 * plan["forward"]
    assert trace.meta["forward_backward_passes"] == 3 * plan["forward_backward"]
