"""Adaptive backward selection: geometric large steps, then an exact tail."""

from __future__ import annotations

import math

import pytest
import torch

from overinterp import Adaptive, Exact, backselect
from overinterp.sis.methods._engine import plan_evaluations
from reference import TinyCNN, reference_backselect, reference_kstep

H, W = 6, 5  # P = 30


@pytest.fixture(scope="module")
def model64():  # overrides conftest's: this module uses 6×5 images
    return TinyCNN(num_classes=3, height=H, width=W, seed=1).double()


@pytest.fixture(scope="module")
def images64():
    return torch.rand(3, 3, H, W, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


@pytest.mark.parametrize("head", ["kstep", "gradient"])
def test_full_tail_is_exact(model64, images64, head):
    exact = backselect(model64, images64, method=Exact(), batch_size=7, progress=False)
    ada = backselect(
        model64, images64, method=Adaptive(step_fraction=0.4, tail=1.0, head=head), batch_size=7, progress=False
    )
    assert torch.equal(ada.order, exact.order)
    torch.testing.assert_close(ada.logodds, exact.logodds, rtol=0, atol=1e-12)


def test_schedule():
    a = Adaptive(step_fraction=0.1, tail=0.15)
    p = 1024
    rem, sizes = p, []
    while rem:
        r = a.step_size(rem, p)
        sizes.append(r)
        rem -= r
    tail = math.ceil(0.15 * p)
    assert a.tail_count(p) == tail
    assert sizes[-tail:] == [1] * tail  # exact single steps for the last 15%
    assert sizes[0] == 102 and sizes[:-tail] == sorted(sizes[:-tail], reverse=True)
    assert sum(sizes[:-tail]) == p - tail  # the head never crosses into the tail
    main, _, _ = plan_evaluations(p, Adaptive().step_size)
    assert main < 524800 / 10  # defaults: over 10× cheaper than exact at P = 1024


def test_kstep_head_matches_reference_and_params_recorded(model64, images64):
    method = Adaptive(step_fraction=0.25, tail=0.2)
    trace = backselect(model64, images64, method=method, batch_size=5, progress=False)
    assert trace.method == {
        "name": "adaptive",
        "params": {"step_fraction": 0.25, "tail": 0.2, "head": "kstep", "channels_last": None},
    }
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    for i in range(len(images64)):
        want = reference_kstep(model64, images64[i], int(trace.target[i]), base, method.step_size)
        assert trace.order[i].tolist() == want
        assert trace.evaluated[i, -6:].all()  # the tail: every prefix evaluated


def test_gradient_head_then_exact_tail(model64, images64):
    """The tail equals exact backward selection started from the head's final state."""
    method = Adaptive(step_fraction=0.3, tail=0.2, head="gradient")
    trace = backselect(model64, images64, method=method, batch_size=5, progress=False)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    tail = method.tail_count(H * W)
    assert tail == 6
    for i in range(len(images64)):
        head = trace.order[i, : H * W - tail].tolist()
        x = images64[i].clone()
        for f in head:
            x[:, f // W, f % W] = 0.0
        order, scores = reference_backselect(model64, x, int(trace.target[i]), base)
        # masked head features are already at the baseline: the reference removes them first,
        # in id order (ties); the remaining part is the exact tail
        want = [f for f in order if f not in head]
        assert trace.order[i, H * W - tail :].tolist() == want
        assert trace.evaluated[i, H * W - tail - 1 :].all()
    assert trace.meta["forward_backward_passes"] > 0
