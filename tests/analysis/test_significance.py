"""harness.analysis.significance on synthetic samples with known answers: the same distribution
is not significant, a +10% shift is (with an interval that covers 10%), one outlier is not;
--min-effect; the exact and asymptotic intervals agree with the test."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis.significance import (
    MAX_PAIRS_SIDE,
    Change,
    _exact_lower_tail,
    compare_samples,
    parse_min_effect,
)

FAST = settings(max_examples=200, deadline=None)
latencies = st.floats(min_value=1e-4, max_value=100.0, allow_nan=False, allow_infinity=False)


def _lognormal(seed: int, n: int, sigma: float = 0.05, scale: float = 1.0) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(mean=math.log(0.2), sigma=sigma, size=n) * scale


def _covers(change: Change, ratio: float) -> bool:
    assert change.ratio_low is not None and change.ratio_high is not None
    return change.ratio_low <= ratio * (1 + 1e-9) and change.ratio_high >= ratio * (1 - 1e-9)


# --- same distribution: not significant ---------------------------------------------------------


@FAST
@given(st.lists(latencies, min_size=1, max_size=60), st.randoms(use_true_random=False))
def test_same_samples_in_any_order_are_not_significant(samples, rnd):
    shuffled = list(samples)
    rnd.shuffle(shuffled)
    change = compare_samples(samples, shuffled)
    assert change.verdict == "not significant" and not change.significant
    assert change.ratio == 1.0  # the pairwise log ratios are symmetric around 0 exactly
    assert change.ratio_low is None or change.ratio_low <= 1.0 <= change.ratio_high
    assert change.text.startswith("not significant: +0.0%")


def test_independent_draws_of_one_distribution_are_rarely_significant():
    """200 pairs of 30 executions from one lognormal: the test is at 95%, so about 5% of them
    are called significant (and never far above): the false alarm rate is what it says."""
    alarms = sum(compare_samples(_lognormal(2 * s, 30), _lognormal(2 * s + 1, 30)).significant for s in range(200))
    assert alarms <= 20, alarms  # expected 10; 20 is beyond 3 standard deviations
    covered = sum(_covers(compare_samples(_lognormal(2 * s, 30), _lognormal(2 * s + 1, 30)), 1.0) for s in range(200))
    assert covered >= 180, covered  # the 95% interval holds the true ratio 1.0


# --- a +10% shift: significant, the interval covers 10% ----------------------------------------


@FAST
@given(
    st.lists(st.floats(min_value=1.0, max_value=1.02), min_size=4, max_size=60),
    st.floats(min_value=1e-3, max_value=10.0),
)
def test_ten_percent_slower_is_significant_and_the_interval_covers_it(noise, base):
    """Executions spread by at most 2% (any pattern, ties included), every one 10% slower."""
    baseline = [base * x for x in noise]
    current = [x * 1.10 for x in baseline]
    change = compare_samples(baseline, current)
    assert change.verdict == "slower" and change.significant and change.p_value < 0.05
    assert change.ratio == pytest.approx(1.10, rel=1e-9) and _covers(change, 1.10)
    assert change.text.startswith("+10.0% slower [95% CI +")
    faster = compare_samples(current, baseline)
    assert faster.verdict == "faster" and faster.ratio == pytest.approx(1 / 1.10, rel=1e-9)


def test_ten_percent_slower_with_real_noise():
    """5% lognormal noise, 40 executions a side, 10% slower: significant every time, and the
    95% interval covers the true 1.10 about 95% of the time."""
    changes = [compare_samples(_lognormal(2 * s, 40), _lognormal(2 * s + 1, 40, scale=1.10)) for s in range(100)]
    assert all(c.verdict == "slower" for c in changes)
    covered = sum(_covers(c, 1.10) for c in changes)
    assert covered >= 88, covered
    assert np.median([c.ratio for c in changes]) == pytest.approx(1.10, abs=0.01)


# --- one outlier: not significant ----------------------------------------------------------------


@FAST
@given(st.lists(latencies, min_size=2, max_size=60), st.integers(min_value=0), st.floats(min_value=2.0, max_value=1e6))
def test_one_outlier_is_not_significant(samples, where, factor):
    """The same executions, one of them ``factor`` times slower (a GC pause, a noisy neighbour):
    one rank moves, the mean does not matter."""
    current = list(samples)
    current[where % len(current)] *= factor
    change = compare_samples(samples, current)
    assert change.verdict == "not significant", change.text
    assert change.ratio_low is None or change.ratio_low <= 1.0 <= change.ratio_high


def test_one_outlier_in_independent_draws():
    alarms = 0
    for s in range(100):
        current = _lognormal(2 * s + 1, 30)
        current[0] *= 50
        alarms += compare_samples(_lognormal(2 * s, 30), current).significant
    assert alarms <= 12, alarms


# --- --min-effect --------------------------------------------------------------------------------


def test_min_effect_turns_a_small_significant_change_into_not_significant():
    baseline = _lognormal(1, 60, sigma=0.01)
    current = baseline * 1.03
    tested = compare_samples(baseline, current)
    assert tested.verdict == "slower" and tested.ratio == pytest.approx(1.03)
    small = compare_samples(baseline, current, min_effect=0.05)
    assert small.significant and small.verdict == "below min effect" and not small.changed
    assert small.text.startswith("not significant: +3.0% [95% CI") and "below --min-effect 5%" in small.text
    # a speed-up is sized as pyperf sizes it: 1/ratio - 1
    assert compare_samples(current, baseline, min_effect=0.029).verdict == "faster"
    assert compare_samples(current, baseline, min_effect=0.031).verdict == "below min effect"


@pytest.mark.parametrize("text, value", [("5%", 0.05), ("5", 0.05), (" 2.5 % ", 0.025), ("0%", 0.0)])
def test_parse_min_effect(text, value):
    assert parse_min_effect(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "%", "five", "-1%", "nan%", "inf"])
def test_parse_min_effect_rejects(text):
    with pytest.raises(ValueError, match="min effect"):
        parse_min_effect(text)


# --- the interval and the test agree --------------------------------------------------------------


def test_exact_null_distribution():
    lower = _exact_lower_tail(4, 4)  # C(8, 4) = 70 arrangements
    assert lower[0] == pytest.approx(1 / 70) and lower[1] == pytest.approx(2 / 70) and lower[-1] == 1.0
    assert _exact_lower_tail(3, 5) == _exact_lower_tail(5, 3)
    for m, n in ((1, 1), (2, 7), (6, 6), (8, 3)):
        tail = _exact_lower_tail(m, n)
        assert len(tail) == m * n + 1 and all(a <= b for a, b in itertools.pairwise(tail))
        assert tail[m * n // 2] >= 0.5  # symmetric around m n / 2


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=2, max_value=40),
    st.integers(min_value=2, max_value=40),
    st.sampled_from([1.0, 1.02, 1.05, 1.1, 1.3]),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_interval_excludes_one_exactly_when_the_test_rejects(m, n, shift, seed):
    """Lehmann's interval is the set of shifts the U test does not reject: the interval
    excludes no-change iff p < 0.05 (continuous samples, exact and asymptotic alike)."""
    rng = np.random.default_rng(seed)
    change = compare_samples(rng.lognormal(0, 0.1, m), rng.lognormal(0, 0.1, n) * shift)
    excludes = change.ratio_low is not None and (change.ratio_low > 1 or change.ratio_high < 1)
    assert excludes == change.significant, change


def test_too_few_samples_cannot_be_significant():
    change = compare_samples([1.0, 1.1, 1.2], [5.0, 5.1, 5.2])  # min exact p for 3 vs 3 is 0.1
    assert change.verdict == "not significant" and change.ratio_low is None
    assert "CI unbounded: too few samples" in change.text
    assert compare_samples([1.0, 1.1, 1.2, 1.3], [5.0, 5.1, 5.2, 5.3]).verdict == "slower"  # p = 2/70


def test_no_samples_and_bad_samples():
    assert compare_samples([], [1.0]).verdict == "no samples"
    assert compare_samples([1.0], []).text == "no samples to test (1 vs 0)"
    with pytest.raises(ValueError, match="finite"):
        compare_samples([1.0, math.nan], [1.0])
    with pytest.raises(ValueError, match="min_effect"):
        compare_samples([1.0], [1.0], min_effect=-0.1)
    same = compare_samples([0.5] * 5, [0.5] * 7)  # one value on both sides
    assert same.verdict == "not significant" and same.p_value == 1.0 and same.ratio == 1.0


def test_zero_latencies_use_differences():
    """A latency of 0 (a cell that did nothing measurable) has no ratio: the shift is tested
    on the differences and sized against the baseline median."""
    change = compare_samples([0.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 2.0, 2.0, 2.0, 2.0])
    assert change.scale == "difference" and change.verdict == "slower" and change.ratio == pytest.approx(2.0)


def test_large_samples_are_thinned_for_the_interval_only():
    baseline = _lognormal(5, 5000, sigma=0.02)
    change = compare_samples(baseline, baseline * 1.01)
    assert change.n_baseline == change.n_current == 5000 > MAX_PAIRS_SIDE
    assert change.verdict == "slower" and _covers(change, 1.01)
