"""check_method / plan_check (experiments) and the paired measures behind them (analysis.faithfulness)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from overinterp import Exact, Fast, backselect, make_method
from overinterp.analysis.faithfulness import Paired, compare_measures, trace_measures
from overinterp.experiments.check_method import check_method, plan_check
from reference import TinyCNN

H, W = 6, 5  # P = 30


@pytest.fixture(scope="module")
def model():
    return TinyCNN(num_classes=3, height=H, width=W, seed=1).double()


@pytest.fixture(scope="module")
def images():
    return torch.rand(4, 3, H, W, generator=torch.Generator().manual_seed(2), dtype=torch.float64)


def test_paired_interval_is_the_t_interval_of_the_differences():
    """Wrong: a Welch (unpaired) interval, or the interval of one group's mean, fails the bounds."""
    a = torch.tensor([0.9, 0.8, 0.95, 0.7, 0.85], dtype=torch.float64)
    b = torch.tensor([0.92, 0.85, 0.9, 0.8, 0.88], dtype=torch.float64)
    d = (a - b).numpy()
    half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
    p = Paired.of(a, b)
    assert p.n == 5 and p.mean == pytest.approx(d.mean())
    assert (p.low, p.high) == pytest.approx((d.mean() - half, d.mean() + half))
    # NaN pairs are dropped, equal differences collapse the interval
    q = Paired.of(torch.tensor([1.0, float("nan"), 3.0]), torch.tensor([0.0, 1.0, 2.0]))
    assert (q.mean, q.low, q.high, q.n) == (1.0, 1.0, 1.0, 2)


def test_settings_equal_to_exact_give_zero_differences(model, images):
    """``Fast(screened=1, exact=1, exact_cap=P)`` is exact: every paired difference is 0 and the
    SIS ratios 1. Wrong: measures of one trace compared with another image's (misaligned), or
    the 5% subset of the method's trace evaluated on exact's order, would not all be 0 when
    compared with a different method below."""
    fast_exact = Fast(screened=1.0, exact=1.0, exact_cap=H * W)
    res = check_method(model, images, fast_exact, batch_size=7, progress=False)
    c = res.comparison
    for k in ("d_acc5", "d_prob5", "d_drop5"):
        assert c[k]["mean"] == 0.0 and c[k]["lo"] == 0.0 and c[k]["hi"] == 0.0
    for k in ("sis99_ratio", "sis90_ratio"):
        assert math.isnan(c[k]) or c[k] == 1.0
    assert torch.equal(res.traces["exact"].order_padded, res.traces["method"].order_padded)


def test_a_poor_method_shows_up_and_measures_are_its_own(model, images):
    """Gradient blocks of 10 features pick other 5% subsets: the method's own measures must be
    computed on its own trace (wrong: on exact's, giving Δ = 0)."""
    bad = make_method("gradient", k=10)
    res = check_method(model, images, bad, batch_size=8, progress=False)
    ex = trace_measures(res.traces["exact"], model, images)
    me = trace_measures(res.traces["method"], model, images)
    assert torch.allclose(torch.tensor(res.measures["method"]["prob5"], dtype=torch.float64), me["prob5"])
    assert res.comparison["d_prob5"]["mean"] == pytest.approx(float((me["prob5"] - ex["prob5"]).mean()))
    again = compare_measures(me, ex)
    assert res.comparison["d_acc5"] == again["d_acc5"] and res.comparison["d_prob5"] == again["d_prob5"]
    assert res.comparison["d_prob5"]["mean"] < 0  # exact keeps the most confident subsets here


def test_planned_cost_is_what_is_measured(model, images):
    """The plan printed in advance equals the passes made. Wrong: a plan from another P (e.g.
    the pixel count with patches) or counts summed over images instead of per image."""
    method = Fast(step_fraction=0.2, screened=0.5, exact=0.1, width=3)
    plan = plan_check(model, images, method, batch_size=8)
    assert plan.num_features == H * W and plan.images == 4
    assert plan.exact == Exact().planned_cost(H * W)
    res = check_method(model, images, method, batch_size=8, progress=False, plan=plan)
    assert res.cost["method_forward"] <= plan.method["forward"]  # recall: an upper bound
    assert res.cost["method_forward_backward"] == plan.method["forward_backward"]
    no_recall = Fast(step_fraction=0.2, screened=0.5, exact=0.1, width=3, recall=0)
    res2 = check_method(model, images, no_recall, batch_size=8, progress=False, exact_trace=res.traces["exact"])
    assert res2.cost["method_forward"] == no_recall.planned_cost(H * W)["forward"]
    assert res2.cost["exact_forward_equivalents"] == H * W * (H * W + 1) / 2
    text = res2.format()
    assert "Δ" in text and "no cost target below P = 1,024" in text


def test_bad_input_refused_before_work(model):
    with pytest.raises(ValueError, match="at least one image"):
        plan_check(model, torch.zeros(0, 3, H, W, dtype=torch.float64), Fast())


def test_exact_trace_reused(model, images):
    """A given exact trace is not recomputed (its seconds are NaN) and gives the same comparison."""
    ex = backselect(model, images, method=Exact(), batch_size=8, progress=False)
    method = Fast(step_fraction=0.2, screened=0.5, exact=0.1, width=3, recall=0)
    a = check_method(model, images, method, batch_size=8, progress=False, exact_trace=ex)
    b = check_method(model, images, method, batch_size=8, progress=False)
    assert math.isnan(a.seconds["exact"]) and not math.isnan(b.seconds["exact"])
    assert a.comparison["d_prob5"] == b.comparison["d_prob5"]
    assert np.isfinite(a.cost["fb_ratio"])


def test_paired_interval_stays_in_range_and_needs_five_images():
    """Differences of accuracies lie in [-1, 1]: a t interval on 2 values reached [-685, +585]
    points. Wrong implementations caught: a raw t interval on fewer than 5 images, and an
    interval left uncut outside the range a difference can take."""
    few = Paired.of(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), bounds=(-1.0, 1.0))
    assert few.n == 2 and few.low != few.low and few.high != few.high
    a = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0], dtype=torch.float64)
    b = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    wide = Paired.of(a, b, bounds=(-1.0, 1.0))
    assert -1.0 <= wide.low <= wide.mean <= wide.high <= 1.0
    row = compare_measures({"acc5": a, "sis99": a, "sis90": a}, {"acc5": b, "sis99": b, "sis90": b})
    assert -1.0 <= row["d_acc5"]["lo"] and row["d_acc5"]["hi"] <= 1.0


def test_the_cost_in_advance_comes_from_the_audits_probe(model, images, monkeypatch):
    """One throughput probe for the audit's plan and check-method's cost: ``plan_check`` takes its
    forward seconds and forward+backward ratio from :func:`probe_throughput`. Wrong
    implementations caught: a second timing loop of its own (the probe below is ignored), a
    forward-only model's missing gradient cost read as NaN instead of 0."""
    import overinterp.experiments.check_method as cm
    from overinterp.experiments.throughput import Throughput, probe_throughput

    seen = []

    def probe(m, shape, **kw):
        seen.append((tuple(shape), kw["dtype"]))
        return Throughput(forwards_per_s=1e9, fb_cost=None, batch_size=4, layout="contiguous", seconds=0.0)

    monkeypatch.setattr(cm, "probe_throughput", probe)
    plan = plan_check(model, images, Exact(), batch_size=8)
    assert seen == [((3, H, W), images.dtype)] and plan.fb_ratio == 0.0
    monkeypatch.undo()
    tp = probe_throughput(lambda x: model(x).detach(), (3, H, W), batch_size=4, seconds=0.05, dtype=images.dtype)
    assert tp.fb_cost is None and tp.forward_seconds > 0  # no gradient through the output: forward-only
    assert probe_throughput(model, (3, H, W), batch_size=4, seconds=0.05, dtype=images.dtype).fb_cost >= 1.0
