"""Confidence intervals against hand computations and table values."""

from __future__ import annotations

import math

import pytest
from analysis_helpers import t_quantile_numeric

from overinterp.analysis import mean_ci, t_quantile, welch_diff_ci


def test_t_quantiles_match_tables_and_an_independent_integral() -> None:
    # printed t-table values (two-sided 95%)
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert t_quantile(0.975, 6) == pytest.approx(2.4469, abs=1e-4)
    for df in (3.2, 6.5946, 17.3):
        assert t_quantile(0.975, df) == pytest.approx(t_quantile_numeric(0.975, df), abs=1e-6)
    assert math.isnan(t_quantile(0.975, 0))


def test_mean_ci_by_hand() -> None:
    ci = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert (ci.mean, ci.n) == (3.0, 5)
    assert ci.low == pytest.approx(3 - half, abs=1e-5) and ci.high == pytest.approx(3 + half, abs=1e-5)
    # NaNs are dropped; one value: no interval; none: all NaN
    one = mean_ci([float("nan"), 0.4])
    assert one.n == 1 and one.mean == 0.4 and math.isnan(one.low) and math.isnan(one.high)
    assert mean_ci([]).n == 0 and math.isnan(mean_ci([]).mean)


def test_welch_equal_variances_gives_integer_df() -> None:
    d = welch_diff_ci([1, 2, 3, 4], [3, 4, 5, 6])
    se = math.sqrt(2 * (5 / 3) / 4)
    assert d.diff == -2.0 and d.df == pytest.approx(6.0)
    assert d.se == pytest.approx(se)
    assert d.low == pytest.approx(-2 - 2.446912 * se, abs=1e-5)
    assert d.high == pytest.approx(-2 + 2.446912 * se, abs=1e-5)


def test_welch_unequal_by_hand() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    qa, qb = (5 / 3) / 4, 14.0 / 6
    se = math.sqrt(qa + qb)
    df = (qa + qb) ** 2 / (qa**2 / 3 + qb**2 / 5)
    d = welch_diff_ci(a, b)
    assert (d.mean_a, d.mean_b, d.n_a, d.n_b) == (2.5, 7.0, 4, 6)
    assert d.df == pytest.approx(df)
    half = t_quantile_numeric(0.975, df) * se
    assert d.low == pytest.approx(-4.5 - half, abs=1e-5) and d.high == pytest.approx(-4.5 + half, abs=1e-5)
    # a 90% interval is narrower
    d90 = welch_diff_ci(a, b, level=0.90)
    assert d.low < d90.low < d90.high < d.high


def test_welch_degenerate_groups() -> None:
    d = welch_diff_ci([1.0], [2.0, 3.0])
    assert d.diff == -1.5 and math.isnan(d.low) and math.isnan(d.high)
    same = welch_diff_ci([2.0, 2.0], [1.0, 1.0, 1.0])
    assert (same.low, same.diff, same.high) == (1.0, 1.0, 1.0)
