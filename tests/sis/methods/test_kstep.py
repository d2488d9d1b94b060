"""k-step backward selection: exact scores, k removals per step."""

from __future__ import annotations

import pytest
import torch

from overinterp import Exact, KStep, backselect, patch_features
from overinterp.sis.methods._engine import plan_evaluations
from reference import reference_kstep

H, W = 5, 4


def test_k1_is_exact(model64, images64):
    exact = backselect(model64, images64, method=Exact(), batch_size=7, progress=False)
    one = backselect(model64, images64, method=KStep(1), batch_size=7, progress=False)
    assert torch.equal(one.order, exact.order)
    assert torch.equal(one.logodds, exact.logodds)
    assert one.evaluated.all()
    assert one.meta["evaluations"] == exact.meta["evaluations"] == 3 * 210


@pytest.mark.parametrize("k", [2, 3, 6, 19, 20])
def test_matches_plain_reference(model64, images64, k):
    trace = backselect(model64, images64, method=KStep(k), batch_size=5, progress=False)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    p = H * W
    firsts = list(range(0, p, k))
    ends = [min(j + k, p) - 1 for j in firsts]
    for i in range(len(images64)):
        assert trace.order[i].tolist() == reference_kstep(
            model64, images64[i], int(trace.target[i]), base, lambda r, t: k
        )
        # evaluated: the first feature of every block (its single-removal score) and every block end
        assert trace.evaluated[i].nonzero().flatten().tolist() == sorted(set(firsts) | set(ends))
    assert trace.meta["evaluations"] == 3 * plan_evaluations(p, lambda r, t: k)[0]
    assert trace.method == {"name": "kstep", "params": {"k": k, "channels_last": None}}


def test_groups(model64, images64):
    groups = patch_features(H, W, 2)
    trace = backselect(model64, images64, method=KStep(2), features=groups, batch_size=4, progress=False)
    base = torch.zeros(3, 1, 1, dtype=torch.float64)
    for i in range(len(images64)):
        want = reference_kstep(model64, images64[i], int(trace.target[i]), base, lambda r, t: 2, groups)
        assert trace.order[i].tolist() == want


def test_cost_is_about_p_squared_over_2k():
    main, _, steps = plan_evaluations(1024, lambda r, t: 16)
    assert steps == 64
    assert abs(main - 1024 * 1024 / 32) / main < 0.05
