"""Correct vs incorrect SIS sizes (Figure 5) and group confidences (Figure S3), by hand."""

from __future__ import annotations

import math

import pytest
from analysis_helpers import make_trace, t_quantile_numeric, values_for_size

from overinterp.analysis import compare_correct_incorrect, plot_group_confidence, plot_percent_increase


@pytest.fixture
def trace():
    # P = 4; SIS sizes (features) at τ = 0.9: correct 1, 2, 3, 2, 3; incorrect 1, 1, 2, 1, 2;
    # the last image is incorrect but its full-image confidence (logit 1.0) is below 0.9.
    sizes = [1, 2, 3, 2, 3, 1, 1, 2, 1, 2]
    values = [values_for_size(k, 4) for k in sizes] + [[1.0, 0.5, 0.2, 0.1]]
    targets = [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 0]
    labels = [0, 1, 2, 0, 1, 0, 1, 2, 0, 1, 3]
    return make_trace(values, targets=targets, labels=labels)


def test_percent_increase_and_welch_interval_by_hand(trace) -> None:
    c = compare_correct_incorrect(trace, [0.5, 0.9], label="m")
    # at 0.5 the low-confidence image counts (its SIS is 1 feature: logit 0.1 ≥ 0)
    assert c.n_correct.tolist() == [5, 5] and c.n_incorrect.tolist() == [6, 5]
    a, b = [0.25, 0.5, 0.75, 0.5, 0.75], [0.25, 0.25, 0.5, 0.25, 0.5]
    mc, mi = sum(a) / 5, sum(b) / 5
    assert c.mean_correct[1] == pytest.approx(mc) and c.mean_incorrect[1] == pytest.approx(mi)
    assert c.pct_increase[1] == pytest.approx(100 * (mc - mi) / mi)
    qa = sum((v - mc) ** 2 for v in a) / 4 / 5  # sample variances / n
    qb = sum((v - mi) ** 2 for v in b) / 4 / 5
    se = math.sqrt(qa + qb)
    df = (qa + qb) ** 2 / (qa**2 / 4 + qb**2 / 4)
    half = t_quantile_numeric(0.975, df) * se
    assert c.diff_low[1] == pytest.approx(mc - mi - half, abs=1e-6)
    assert c.pct_low[1] == pytest.approx(100 * (mc - mi - half) / mi, abs=1e-4)
    assert c.pct_high[1] == pytest.approx(100 * (mc - mi + half) / mi, abs=1e-4)
    # mean full-image confidence per group among f(x) ≥ τ
    s8, s1 = 1 / (1 + math.exp(-8.0)), 1 / (1 + math.exp(-1.0))
    assert c.conf_correct[1] == pytest.approx(s8)
    assert c.conf_incorrect[0] == pytest.approx((5 * s8 + s1) / 6)
    assert c.conf_incorrect[1] == pytest.approx(s8)
    rows = c.rows()
    assert rows[1]["n_incorrect"] == 5 and rows[1]["pct_increase"] == pytest.approx(100 * (mc - mi) / mi)


def test_groups_under_five_images_get_no_interval_and_intervals_stay_in_range() -> None:
    """Wrong implementation caught: Welch's t on 2-3 fractions (ends far outside [-1, 1])."""
    t = make_trace([values_for_size(k, 4) for k in (1, 4, 1, 4)], targets=[0, 1, 0, 1], labels=[0, 1, 1, 0])
    c = compare_correct_incorrect(t, [0.9])
    assert c.n_correct.tolist() == [2] and math.isnan(c.diff_low[0]) and math.isnan(c.diff_high[0])
    many = make_trace([values_for_size(k, 4) for k in (1, 4, 1, 4, 1) * 2], targets=[0] * 10, labels=[0] * 5 + [1] * 5)
    c = compare_correct_incorrect(many, [0.9])
    assert -1.0 <= float(c.diff_low[0]) <= float(c.diff_high[0]) <= 1.0 and float(c.pct_low[0]) >= -100.0


def test_no_incorrect_images_gives_nan_not_an_error() -> None:
    t = make_trace([values_for_size(1, 4), values_for_size(2, 4)], targets=[0, 1], labels=[0, 1])
    c = compare_correct_incorrect(t, [0.9])
    assert c.n_incorrect.tolist() == [0] and math.isnan(c.pct_increase[0]) and math.isnan(c.conf_incorrect[0])
    with pytest.raises(ValueError, match="labels"):
        compare_correct_incorrect(make_trace([values_for_size(1, 4)], targets=[0]), [0.9])


def test_plots_draw_every_series(trace) -> None:
    c = compare_correct_incorrect(trace, [0.5, 0.9], label="m")
    ax = plot_percent_increase([c])
    assert any(ln.get_label() == "m" for ln in ax.get_lines())
    assert "Welch" in ax.get_title()
    ax.figure.clf()
    ax = plot_group_confidence([c])
    assert sorted(ln.get_label() for ln in ax.get_lines()) == ["m: correct", "m: incorrect"]
    ax.figure.clf()
