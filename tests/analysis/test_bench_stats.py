"""Unit tests for harness.analysis.bench: statistics, throughput, checks, marks, cost comparison."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis.bench import (
    Check,
    CostRow,
    Stats,
    compare_costs,
    mark,
    parse_check,
    real_time_factor,
    summarize,
    tokens_per_second,
)

timings = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
samples_st = st.lists(timings, min_size=1, max_size=60)
FAST = settings(max_examples=150, deadline=None)


# --- summarize ---------------------------------------------------------------------------


def test_empty_is_all_none_and_json_safe():
    s = summarize([])
    assert s.n == 0 and s.outliers == 0
    for f in ("min", "max", "mean", "stdev", "median", "p90", "p99", "q1", "q3", "iqr"):
        assert getattr(s, f) is None, f
    assert Stats.model_validate_json(s.model_dump_json()) == s


def test_single_sample():
    s = summarize([0.25])
    assert (s.n, s.min, s.max, s.mean, s.median, s.p99, s.q1, s.q3, s.iqr) == (
        1,
        0.25,
        0.25,
        0.25,
        0.25,
        0.25,
        0.25,
        0.25,
        0.0,
    )
    assert s.stdev is None and s.outliers == 0


def test_known_values():
    s = summarize([1, 2, 3, 4, 5, 6, 7, 8, 9, 100])
    assert s.median == 5.5 and s.q1 == 3.25 and s.q3 == 7.75 and s.iqr == 4.5
    assert s.mean == pytest.approx(14.5)
    assert s.stdev == pytest.approx(statistics.stdev([1, 2, 3, 4, 5, 6, 7, 8, 9, 100]))
    assert s.outliers == 1  # fences -3.5 and 14.5: only 100 lies outside


def test_outliers_on_both_sides_and_fence_is_inclusive():
    # q1=10, q3=20, iqr=10, fences -5 and 35; -5 and 35 are on the fences (not outliers).
    data = [-6, -5, 10, 10, 10, 10, 20, 20, 20, 20, 35, 36, 10, 20, 15]
    s = summarize(data)
    assert (s.q1, s.q3) == (10.0, 20.0)
    assert s.outliers == 2


def test_mean_is_exact():
    # a naive running sum loses the 1.0 entirely: (-1e16 + 1) + 1e16 == 0
    assert summarize([1e16, 1.0, -1e16]).mean == pytest.approx(1 / 3)


def test_warmup_excluded_and_counted():
    s = summarize([100.0, 50.0, 1.0, 2.0, 3.0], warmup=2)
    assert (s.n, s.warmup, s.max, s.median) == (3, 2, 3.0, 2.0)
    over = summarize([1.0, 2.0], warmup=5)
    assert (over.n, over.warmup, over.median) == (0, 2, None)


@pytest.mark.parametrize("bad", [[1.0, float("nan")], [float("inf")]])
def test_non_finite_samples_refused(bad):
    with pytest.raises(ValueError, match="finite"):
        summarize(bad)


def test_negative_warmup_refused():
    with pytest.raises(ValueError, match="warmup"):
        summarize([1.0], warmup=-1)


@FAST
@given(samples_st)
def test_order_of_statistics(xs):
    s = summarize(xs)
    assert s.min <= s.q1 <= s.median <= s.q3 <= s.p90 <= s.p99 <= s.max
    assert s.min <= s.mean <= s.max
    assert s.iqr >= 0 and (s.stdev is None or s.stdev >= 0)
    assert 0 <= s.outliers <= s.n == len(xs)


@FAST
@given(samples_st)
def test_quantiles_match_numpy_and_statistics(xs):
    s = summarize(xs)
    q = np.percentile(np.asarray(xs, dtype=float), [25, 50, 75, 90, 99])
    got = [s.q1, s.median, s.q3, s.p90, s.p99]
    assert all(math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) for a, b in zip(got, q, strict=False)), (got, q)
    assert math.isclose(s.median, statistics.median(xs), rel_tol=1e-12, abs_tol=1e-12)


@FAST
@given(samples_st, st.randoms(use_true_random=False), st.lists(timings, max_size=5))
def test_permutation_invariant(xs, rnd, warm):
    shuffled = list(xs)
    rnd.shuffle(shuffled)
    assert summarize(shuffled) == summarize(xs)
    with_warmup = summarize(warm + shuffled, warmup=len(warm))
    assert with_warmup == summarize(xs).model_copy(update={"warmup": len(warm)})


@FAST
@given(samples_st)
def test_outliers_match_tukey_definition(xs):
    s = summarize(xs)
    lo, hi = s.q1 - 1.5 * s.iqr, s.q3 + 1.5 * s.iqr
    assert s.outliers == sum(1 for x in xs if x < lo or x > hi)


# --- throughput --------------------------------------------------------------------------


def test_tokens_per_second():
    assert tokens_per_second(100, 2.0) == 50.0
    assert tokens_per_second(None, 2.0) is None
    assert tokens_per_second(100, None) is None
    assert tokens_per_second(100, 0) is None
    assert tokens_per_second(0, 1.0) is None


def test_real_time_factor():
    assert real_time_factor(10.0, 2.5) == 4.0  # 10 s of audio in 2.5 s: 4x real time
    assert real_time_factor(1.0, 4.0) == 0.25
    assert real_time_factor(0.0, 1.0) is None
    assert real_time_factor(5.0, 0.0) is None
    assert real_time_factor(None, None) is None


def test_negative_rate_input_refused():
    with pytest.raises(ValueError, match="seconds"):
        tokens_per_second(10, -1.0)


# --- checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("median:10%", Check(field="median", threshold=10.0, percent=True)),
        ("p90:5%", Check(field="p90", threshold=5.0, percent=True)),
        ("min:0.002", Check(field="min", threshold=0.002, percent=False)),
        (" peak_memory : 10 % ", Check(field="peak_memory", threshold=10.0, percent=True)),
    ],
)
def test_parse_check(text, expected):
    assert parse_check(text) == expected
    assert parse_check(str(expected)) == expected  # str() round-trips


@pytest.mark.parametrize(
    "text, why",
    [
        ("median:", "missing threshold"),
        ("median:%", "missing threshold"),
        ("foo:10%", "unknown field 'foo'"),
        ("median:-5%", ">= 0"),
        ("median:abc", "'abc' is not a number"),
        ("median:nan%", ">= 0"),
        ("median10%", "expected FIELD:THRESHOLD"),
        ("n:3", "unknown field 'n'"),
    ],
)
def test_parse_check_rejects(text, why):
    with pytest.raises(ValueError, match=None) as info:
        parse_check(text)
    assert why in str(info.value) and repr(text) in str(info.value)


def test_evaluate_message_format():
    chk = parse_check("median:10%")
    msg = chk.evaluate({"median": 0.120}, {"median": 0.145})
    assert msg == "median 0.120 s -> 0.145 s (+20.8% > 10%)"
    assert chk.evaluate({"median": 0.120}, {"median": 0.130}) is None
    assert chk.evaluate({"median": 0.120}, {"median": 0.010}) is None  # faster never fails


def test_evaluate_absolute_and_stats_input():
    chk = parse_check("min:0.002")
    base, cur = summarize([0.100, 0.2]), summarize([0.103, 0.2])
    assert chk.evaluate(base, cur) == "min 0.100 s -> 0.103 s (+3.00 ms > 2.00 ms)"
    assert chk.evaluate(base, summarize([0.1015])) is None


def test_evaluate_peak_memory_and_missing():
    chk = parse_check("peak_memory:10%")
    msg = chk.evaluate({"peak_memory_bytes": 100 * 2**20}, {"peak_memory": 120 * 2**20})
    assert msg == "peak_memory 100.0 MiB -> 120.0 MiB (+20.0% > 10%)"
    assert chk.evaluate({}, {"peak_memory_bytes": 1}) is None
    assert parse_check("median:1%").evaluate(summarize([]), summarize([1.0])) is None


def test_evaluate_boundary_is_not_a_regression():
    assert parse_check("median:50%").evaluate({"median": 1.0}, {"median": 1.5}) is None
    assert parse_check("median:49.9%").evaluate({"median": 1.0}, {"median": 1.5}) is not None
    assert parse_check("max:0.5").evaluate({"max": 1.0}, {"max": 1.5}) is None
    assert parse_check("max:0.499").evaluate({"max": 1.0}, {"max": 1.5}) is not None


def test_evaluate_zero_baseline():
    chk = parse_check("median:10%")
    assert "+inf%" in chk.evaluate({"median": 0.0}, {"median": 0.001})
    assert chk.evaluate({"median": 0.0}, {"median": 0.0}) is None


@FAST
@given(
    st.floats(min_value=1e-4, max_value=1e3),
    st.floats(min_value=0, max_value=200),
    st.floats(min_value=-0.9, max_value=3.0).filter(lambda r: abs(r) > 1e-6),
)
def test_evaluate_fails_exactly_above_threshold(base, pct, rel):
    # current = base * (1 + pct% * (1 + rel)): rel > 0 exceeds the threshold, rel < 0 does not
    cur = base * (1 + pct / 100 * (1 + rel))
    msg = Check(field="p90", threshold=pct, percent=True).evaluate({"p90": base}, {"p90": cur})
    change = (cur - base) / base * 100
    if not math.isclose(change, pct, rel_tol=1e-9, abs_tol=1e-9):
        assert (msg is not None) == (change > pct), (change, pct, msg)


@FAST
@given(st.floats(min_value=0, max_value=10), st.floats(min_value=0, max_value=10), st.floats(min_value=0, max_value=1))
def test_absolute_fails_exactly_above_threshold(base, cur, thr):
    msg = Check(field="max", threshold=thr, percent=False).evaluate({"max": base}, {"max": cur})
    assert (msg is not None) == (cur - base > thr)


# --- marks -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base, cur, comparable, b_ok, c_ok, expected",
    [
        (1.0, 1.0, False, True, True, "x"),  # spec hash / env differ
        (1.0, 5.0, False, True, False, "x"),  # not comparable wins over failing
        (1.0, None, True, True, False, "!"),  # newly failing
        (None, None, True, False, False, " "),  # both failing
        (None, 1.0, True, False, True, " "),  # fixed
        (1.0, 1.2, True, True, True, "+"),  # worse by > 10%
        (1.0, 0.8, True, True, True, "-"),  # better by > 10%
        (1.0, 1.05, True, True, True, " "),  # within factor
        (1.0, 1.1, True, True, True, " "),  # exactly the factor is not worse
        (1.0, None, True, True, True, " "),  # no value to rank
    ],
)
def test_mark(base, cur, comparable, b_ok, c_ok, expected):
    assert mark(base, cur, comparable=comparable, baseline_ok=b_ok, current_ok=c_ok) == expected


def test_mark_factor():
    assert mark(1.0, 1.5, comparable=True, baseline_ok=True, current_ok=True, factor=2.0) == " "
    assert mark(1.0, 2.5, comparable=True, baseline_ok=True, current_ok=True, factor=2.0) == "+"
    with pytest.raises(ValueError, match="factor"):
        mark(1.0, 1.0, comparable=True, baseline_ok=True, current_ok=True, factor=0.5)


# --- compare_costs -----------------------------------------------------------------------


def row(key, median, *, spec="s1", env="e1", ok=True, mem=100 * 2**20):
    stats = summarize([median] * 3).model_dump() if median is not None else summarize([]).model_dump()
    return {"key": key, "spec_hash": spec, "env_key": env, "ok": ok, "stats": stats, "peak_memory_bytes": mem}


def test_compare_costs():
    baseline = [row("a", 1.0), row("b", 1.0), row("c", 1.0), row("d", 1.0), row("e", 1.0), row("gone", 1.0)]
    current = [
        row("a", 1.5),  # slower
        row("b", 0.5, mem=200 * 2**20),  # faster, but memory doubled
        row("c", 9.0, spec="s2"),  # changed spec: not comparable, never regressed
        row("d", 9.0, env="e2"),  # changed environment
        row("e", None, ok=False),  # newly failing
        row("new", 1.0),
    ]
    rows = {r.key: r for r in compare_costs(baseline, current, ["median:10%", "peak_memory:10%"])}
    assert list(rows) == ["a", "b", "c", "d", "e", "gone", "new"]
    assert rows["a"].mark == "+" and rows["a"].ratio == 1.5 and rows["a"].regressed
    assert rows["a"].messages == ["median 1.000 s -> 1.500 s (+50.0% > 10%)"]
    assert rows["b"].mark == "-" and rows["b"].messages == ["peak_memory 100.0 MiB -> 200.0 MiB (+100.0% > 10%)"]
    assert (rows["c"].mark, rows["c"].messages, rows["c"].note) == ("x", [], "spec hash differs")
    assert (rows["d"].mark, rows["d"].messages, rows["d"].note) == ("x", [], "environment differs")
    assert (rows["e"].mark, rows["e"].current_median, rows["e"].ratio) == ("!", None, None)
    assert (rows["gone"].mark, rows["gone"].note) == ("x", "only in baseline")
    assert (rows["new"].mark, rows["new"].note, rows["new"].baseline_median) == ("x", "only in current", None)
    # JSON-safe for the report
    json.loads(json.dumps([r.model_dump() for r in rows.values()]))


def test_compare_costs_same_and_duplicates():
    out = compare_costs([row("a", 1.0)], [row("a", 1.02)], [parse_check("median:5%")])
    assert out == [CostRow(key="a", mark=" ", baseline_median=1.0, current_median=1.02, ratio=1.02)]
    with pytest.raises(ValueError, match="duplicate key 'a'"):
        compare_costs([row("a", 1.0), row("a", 2.0)], [])
    with pytest.raises(ValueError, match="unknown field"):
        compare_costs([], [], ["bogus:1%"])
