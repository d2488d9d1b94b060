"""SIS sizes from stored traces at any threshold, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from analysis_helpers import make_trace

from overinterp import backselect
from overinterp.analysis import full_confidence, sis_fraction_matrix, sis_fractions, sis_size_curve, trace_accuracy
from overinterp.analysis.sis_size import feature_pixel_counts, plot_sis_size_curves

NAN = float("nan")


@pytest.fixture
def trace():
    # kept-prefix log-odds: [full, keep order[1:], keep order[2:], keep order[3:]]
    return make_trace(
        [[5.0, 4.0, 2.0, 0.5], [3.0, 2.5, 2.5, 1.0], [1.0, 0.5, 0.2, 0.1]], targets=[0, 1, 1], labels=[0, 1, 0]
    )


def test_sis_fractions_by_hand(trace) -> None:
    # logit(0.5)=0, logit(0.9)=2.197, logit(0.95)=2.944, logit(0.99)=4.595
    expected = torch.tensor(
        [[0.25, 0.25, 0.25], [0.75, 0.50, NAN], [0.75, 1.00, NAN], [1.00, NAN, NAN]], dtype=torch.float64
    )
    got = sis_fraction_matrix(trace, [0.5, 0.9, 0.95, 0.99])
    assert torch.allclose(got, expected, equal_nan=True)
    assert torch.allclose(sis_fractions(trace, 0.9), expected[1], equal_nan=True)


def test_curve_mean_and_interval_by_hand(trace) -> None:
    c = sis_size_curve(trace, [0.5, 0.9, 0.99], label="m")
    assert c.n.tolist() == [3, 2, 1]
    assert c.mean[0] == pytest.approx(0.25) and c.mean[1] == pytest.approx(0.625) and c.mean[2] == 1.0
    # fewer than 5 images: no interval (a t interval on n = 2 would be 0.625 ± 1.59, far outside [0, 1])
    assert all(math.isnan(v) for v in (*c.low.tolist(), *c.high.tolist()))
    many = sis_size_curve(make_trace([[5.0, 4.0, 2.0, 0.5]] * 3 + [[3.0, 2.5, 2.5, 1.0]] * 3, targets=[0] * 6), [0.9])
    assert many.n.tolist() == [6] and 0.5 <= float(many.low[0]) <= float(many.mean[0]) <= float(many.high[0]) <= 0.75
    assert c.accuracy == pytest.approx(2 / 3) == trace_accuracy(trace)
    # select: only images 1 and 2
    sel = sis_size_curve(trace, [0.5], select=torch.tensor([False, True, True]))
    assert sel.n.tolist() == [2] and sel.n_images == 2
    assert len(c.rows()) == 3 and c.rows()[1]["mean_sis_fraction"] == pytest.approx(0.625)
    assert torch.allclose(full_confidence(trace), torch.sigmoid(torch.tensor([5.0, 3.0, 1.0], dtype=torch.float64)))


def test_group_features_count_pixels() -> None:
    # 2×2 image, three features: feature 0 covers the top row (2 pixels)
    groups = torch.tensor([[0, 0], [1, 2]])
    t = make_trace(
        [[5.0, 5.0, -5.0], [5.0, -5.0, -5.0]], targets=[0, 0], features=groups, orders=[[1, 2, 0], [0, 1, 2]]
    )
    assert feature_pixel_counts(t).tolist() == [[2, 1, 1], [2, 1, 1]]
    # image 0: SIS = order[1:] = {2, 0} → 3 of 4 pixels; image 1: SIS = {0, 1, 2} → all 4
    assert sis_fractions(t, 0.9).tolist() == [0.75, 1.0]


def test_trace_alone_agrees_with_verified_sis() -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3)).double().eval()
    with torch.no_grad():
        net[1].weight.mul_(4)
    x = torch.rand(5, 3, 2, 2, dtype=torch.float64)
    tr = backselect(net, x, batch_size=64, progress=False)
    found = 0
    for tau in (0.4, 0.6, 0.8):
        verified = tr.find_sis(tau, net, x)
        found += sum(s is not None for s in verified)
        sizes = [NAN if s is None else s.numel() / 4 for s in verified]
        assert torch.allclose(sis_fractions(tr, tau), torch.tensor(sizes, dtype=torch.float64), equal_nan=True)
    assert found >= 5


def test_plot_has_one_line_per_curve_with_markers(trace) -> None:
    curves = [sis_size_curve(trace, [0.5, 0.9], label="a"), sis_size_curve(trace, [0.5, 0.9], label="b")]
    ax = plot_sis_size_curves(curves)
    lines = [ln for ln in ax.get_lines() if ln.get_label() in ("a, acc. 66.7%", "b, acc. 66.7%")]
    assert len(lines) == 2
    assert lines[0].get_marker() != lines[1].get_marker() and lines[0].get_linestyle() != lines[1].get_linestyle()
    ax.figure.clf()
