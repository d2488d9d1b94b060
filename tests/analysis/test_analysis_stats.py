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


def test_bounded_intervals_stay_inside_the_range_on_small_and_degenerate_inputs():
    """Wrong implementations caught: a t interval for bounded means (n = 3 values near 0 gives a
    negative low end, the issue's "2.12% [-0.36, 4.59] (n=3)"), a normal-approximation
    interval for proportions (0/5 gives [0, 0] and 5/5 [1, 1]; 1/5 a negative low end)."""
    from overinterp.analysis.stats import MIN_VALUES, bounded_mean_ci, format_ci, wilson_ci

    for k, n in [(0, 1), (0, 5), (1, 5), (5, 5), (3, 3), (1, 1000), (999, 1000)]:
        ci = wilson_ci(k, n)
        assert 0.0 <= ci.low <= k / n <= ci.high <= 1.0
        assert ci.high - ci.low > 0  # never a zero-width interval
    assert wilson_ci(0, 10).high == pytest.approx(0.2775, abs=1e-4)  # by hand: z²/(n+z²)
    for values in ([0.001, 0.002, 0.05, 0.0, 0.0], [0.0] * 7, [1.0] * 9, [0.0, 1.0] * 3, [0.99, 1.0, 1.0, 1.0, 0.97]):
        ci = bounded_mean_ci(values)
        assert 0.0 <= ci.low <= ci.mean <= ci.high <= 1.0
        assert min(values) <= ci.low and ci.high <= max(values)
    few = bounded_mean_ci([0.02, 0.03, 0.01])
    assert few.n == 3 < MIN_VALUES and math.isnan(few.low)
    assert "too few images (n = 3)" in format_ci(few)
    assert format_ci(wilson_ci(3, 4)) == "75.0% [30.1, 95.4] (3/4)"
    assert bounded_mean_ci([0.1, 0.2, 0.3, 0.4, 0.5]) == bounded_mean_ci([0.1, 0.2, 0.3, 0.4, 0.5])  # seeded
