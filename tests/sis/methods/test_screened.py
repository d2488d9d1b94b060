"""Exact backward selection with bf16 screening and float32 re-ranking."""

from __future__ import annotations

import copy

import pytest
import torch

from overinterp import Exact, Screened, backselect
from overinterp.sis.methods._engine import plan_evaluations
from reference import TinyCNN, score_removal

H, W = 5, 4


def test_float64_is_exact(model64, images64):
    """autocast never casts float64: the screen is exact and so is the method."""
    exact = backselect(model64, images64, batch_size=7, progress=False)
    scr = backselect(model64, images64, method=Screened(rescore_top=1), batch_size=7, progress=False)
    assert torch.equal(scr.order, exact.order)
    torch.testing.assert_close(scr.logodds, exact.logodds, rtol=0, atol=1e-12)


def test_float32_records_full_precision_values_and_counts(model64, images64):
    m32 = copy.deepcopy(model64).float()
    x32 = images64.float()
    trace = backselect(m32, x32, method=Screened(rescore_top=4), batch_size=16, progress=False)
    assert trace.evaluated.all()
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    for i in range(len(x32)):
        order = trace.order[i].tolist()
        assert sorted(order) == list(range(H * W))
        for j in range(H * W):  # float32 values (float64 reference within float32 rounding)
            want = score_removal(model64, images64[i], int(trace.target[i]), base, order[: j + 1])
            assert float(trace.logodds[i, j]) == pytest.approx(want, abs=2e-4)
    main, rescore, _ = plan_evaluations(H * W, None, 4)
    assert trace.meta["screened_evaluations"] == 3 * main == 3 * 210
    assert trace.meta["rescored_evaluations"] == 3 * rescore == 3 * (4 * 17 + 3 + 2 + 1)
    assert trace.method == {
        "name": "screened",
        "params": {"screen": "bfloat16", "rescore_top": 4, "channels_last": None},
    }


def test_float32_wide_rescore_equals_exact_up_to_near_ties(model64, images64):
    """Re-scoring every candidate in float32 is float32 exact: same order up to float noise."""
    m32 = copy.deepcopy(model64).float()
    x32 = images64.float()
    exact = backselect(m32, x32, method=Exact(), batch_size=16, progress=False)
    wide = backselect(m32, x32, method=Screened(rescore_top=H * W), batch_size=16, progress=False)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    for i in range(len(x32)):
        a, b = exact.order[i].tolist(), wide.order[i].tolist()
        k = next((j for j in range(len(a)) if a[j] != b[j]), None)
        if k is None:
            continue
        t = int(exact.target[i])
        sa = score_removal(model64, images64[i], t, base, b[:k] + [a[k]])
        sb = score_removal(model64, images64[i], t, base, b[:k] + [b[k]])
        assert abs(sa - sb) <= 1e-4 * max(1.0, abs(sa))


def test_screen_is_really_reduced_precision():
    """With m = 1 the step is the bf16 argmax: its choices are not always float32's."""
    model = TinyCNN(num_classes=3, height=8, width=8, seed=7, scale=0.3)
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    exact = backselect(model, x, batch_size=64, progress=False)
    scr = backselect(model, x, method=Screened(rescore_top=1), batch_size=64, progress=False)
    assert not torch.equal(exact.order, scr.order)
    assert scr.meta["rescored_evaluations"] == 4 * 64
