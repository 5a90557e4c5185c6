"""Latency / throughput / memory statistics and regression checks over timing samples.

Pure functions over numbers, no timers and no torch: the runner measures, this module
summarises and judges, the report renders. Modelled on public practice:

- pyperf / pytest-benchmark: summary statistics with warmup samples left out, Tukey
  (1.5 * IQR) outlier counts, regression checks as tiny objects (``"median:10%"``) that
  return a message or None;
- asv: one-character comparison marks, and a changed spec hash or environment makes a
  row "not comparable" (``x``), never "regressed";
- pyperf's compare_to: a change counts only when it is statistically significant. Rows that
  carry per-execution ``samples`` get a two-sample test (harness.analysis.significance), their
  mark follows it (``+`` / ``-`` only for a significant change of at least ``min_effect``) and
  the ``significant`` check fails on a significant slowdown; rows without samples keep the
  median-within-factor mark. Threshold checks (``median:10%``) judge the summary numbers alone,
  as before: the option for those who want a fixed line, noise or not.

Quantiles use linear interpolation between order statistics (numpy's default, Hyndman &
Fan type 7), so q1 <= median <= q3 always holds and the median is the usual median.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from harness.analysis.significance import Change, compare_samples

# Fields a check may name: everything in Stats that is "lower is better" and in seconds,
# plus peak memory (bytes). ``n``/``warmup``/``outliers`` are counts, not costs.
TIME_FIELDS = ("min", "max", "mean", "stdev", "median", "p90", "p99", "q1", "q3", "iqr")
MEMORY_FIELD = "peak_memory"
CHECK_FIELDS = (*TIME_FIELDS, MEMORY_FIELD)
MARKS = ("x", "!", "+", "-", " ")


class Stats(BaseModel):
    """Summary of the measured samples (seconds). Every float is None when n == 0;
    ``stdev`` is None when n < 2 (a sample stdev is undefined for one value)."""

    model_config = ConfigDict(frozen=True)

    n: int = 0
    warmup: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    stdev: float | None = None
    median: float | None = None
    p90: float | None = None
    p99: float | None = None
    q1: float | None = None
    q3: float | None = None
    iqr: float | None = None
    outliers: int = 0


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Type-7 quantile of sorted data, clamped to its bracket so that rounding can never
    reorder quantiles (float ops are monotone, the clamp covers overflow)."""
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    frac = pos - lo
    a = ordered[lo]
    if frac == 0 or lo + 1 >= len(ordered):
        return a
    b = ordered[lo + 1]
    return min(max(a + (b - a) * frac, a), b)


def summarize(samples: Sequence[float], warmup: int = 0) -> Stats:
    """Summarise ``samples`` after dropping the first ``warmup`` (caches, lazy init and
    autotuning make first calls unrepresentative; pyperf drops them the same way).
    Non-finite samples are refused: they would make the JSON unreadable elsewhere."""
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    values = [float(x) for x in samples]
    bad = [x for x in values if not math.isfinite(x)]
    if bad:
        raise ValueError(f"samples must be finite numbers, got {bad[0]!r}")
    dropped = min(warmup, len(values))
    data = sorted(values[dropped:])
    n = len(data)
    if n == 0:
        return Stats(n=0, warmup=dropped)
    mean = math.fsum(data) / n  # fsum: exact sum, so the result ignores sample order
    stdev = math.sqrt(math.fsum((x - mean) ** 2 for x in data) / (n - 1)) if n > 1 else None
    q1, q3 = _quantile(data, 0.25), _quantile(data, 0.75)
    iqr = q3 - q1
    lo_fence, hi_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    return Stats(
        n=n,
        warmup=dropped,
        min=data[0],
        max=data[-1],
        mean=min(max(mean, data[0]), data[-1]),
        stdev=stdev,
        median=_quantile(data, 0.5),
        p90=_quantile(data, 0.90),
        p99=_quantile(data, 0.99),
        q1=q1,
        q3=q3,
        iqr=iqr,
        outliers=sum(1 for x in data if x < lo_fence or x > hi_fence),
    )


def _rate(amount: float | None, seconds: float | None, what: str) -> float | None:
    """amount / seconds, or None when there is nothing to divide by. Negative or
    non-finite input is a measuring bug, so it raises instead of hiding in a report."""
    if amount is None or seconds is None:
        return None
    for name, v in ((what, amount), ("seconds", seconds)):
        if not math.isfinite(v) or v < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if seconds == 0 or amount == 0:
        return None
    return amount / seconds


def tokens_per_second(tokens: int | None, seconds: float | None) -> float | None:
    """Generated tokens per wall-clock second; None when either is None or zero."""
    return _rate(tokens, seconds, "tokens")


def real_time_factor(audio_seconds: float | None, wall_seconds: float | None) -> float | None:
    """Seconds of audio produced per second of wall time (> 1 is faster than real time);
    None when either is None or zero."""
    return _rate(audio_seconds, wall_seconds, "audio_seconds")


def fmt_seconds(value: float | None) -> str:
    """A duration as the cost table and the checks print it: seconds from 0.1 s, then ms, then us
    (one formatter: the table and the check messages used to switch units at other points)."""
    if value is None:
        return "-"
    mag = abs(value)
    if mag == 0 or mag >= 0.1:
        return f"{value:.3f} s"
    if mag >= 1e-4:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.1f} us"


def _fmt(field: str, value: float) -> str:
    return f"{value / 2**20:.1f} MiB" if field == MEMORY_FIELD else fmt_seconds(value)


def _lookup(values: Stats | Mapping[str, Any], field: str) -> float | None:
    """A field from Stats or a dict; peak memory is also found as ``peak_memory_bytes``."""
    d = values.model_dump() if isinstance(values, Stats) else values
    v = d.get(field)
    if v is None and field == MEMORY_FIELD:
        v = d.get("peak_memory_bytes")
    return None if v is None else float(v)


class Check(BaseModel):
    """One regression check, e.g. ``median:10%`` (relative) or ``min:0.002`` (absolute,
    seconds; bytes for peak_memory). Only increases fail: every field is lower-is-better."""

    model_config = ConfigDict(frozen=True)

    field: str
    threshold: float
    percent: bool

    def __str__(self) -> str:
        return f"{self.field}:{self.threshold:g}{'%' if self.percent else ''}"

    def evaluate(self, baseline: Stats | Mapping[str, Any], current: Stats | Mapping[str, Any]) -> str | None:
        """A readable message when ``current`` exceeds ``baseline`` by more than the
        threshold (strictly), else None. A value missing on either side is not judged:
        a failed or empty run is the business of marks and status, not of cost checks."""
        base, cur = _lookup(baseline, self.field), _lookup(current, self.field)
        if base is None or cur is None:
            return None
        head = f"{self.field} {_fmt(self.field, base)} -> {_fmt(self.field, cur)}"
        if self.percent:
            if base == 0:
                change = math.inf if cur > 0 else 0.0
            else:
                change = (cur - base) / abs(base) * 100.0
            if change > self.threshold:
                return f"{head} ({change:+.1f}% > {self.threshold:g}%)"
            return None
        delta = cur - base
        if delta > self.threshold:
            return f"{head} (+{_fmt(self.field, delta)} > {_fmt(self.field, self.threshold)})"
        return None


SIGNIFICANT = "significant"


class SignificantCheck(BaseModel):
    """The check ``significant``: fails when the per-execution latencies of the current run
    are significantly slower than the baseline's (Mann-Whitney U at 95%) by at least the
    comparison's ``min_effect``. Not judged when either side has no samples."""

    model_config = ConfigDict(frozen=True)

    def __str__(self) -> str:
        return SIGNIFICANT

    def evaluate_change(self, change: Change | None) -> str | None:
        if change is None or change.verdict != "slower":
            return None
        return f"latency significantly slower ({change.percent:+.1f}%, p={change.p_value:.2g})"


def parse_check(text: str) -> Check | SignificantCheck:
    """Parse ``significant`` or ``FIELD:THRESHOLD[%]``; the ValueError names the part that is wrong."""
    if str(text).strip() == SIGNIFICANT:
        return SignificantCheck()
    field, sep, value = str(text).strip().partition(":")
    field, value = field.strip(), value.strip()
    if not sep or not field:
        raise ValueError(
            f"check {text!r}: expected FIELD:THRESHOLD, e.g. 'median:10%' or 'min:0.002' (or '{SIGNIFICANT}')"
        )
    if field not in CHECK_FIELDS:
        raise ValueError(f"check {text!r}: unknown field {field!r}; expected one of {', '.join(CHECK_FIELDS)}")
    percent = value.endswith("%")
    number = value[:-1].strip() if percent else value
    if not number:
        raise ValueError(f"check {text!r}: missing threshold after ':'")
    try:
        threshold = float(number)
    except ValueError:
        raise ValueError(f"check {text!r}: threshold {number!r} is not a number") from None
    if not math.isfinite(threshold) or threshold < 0:
        raise ValueError(f"check {text!r}: threshold must be a finite number >= 0, got {number!r}")
    return Check(field=field, threshold=threshold, percent=percent)


def mark(
    baseline: float | None,
    current: float | None,
    *,
    comparable: bool,
    baseline_ok: bool,
    current_ok: bool,
    factor: float = 1.1,
) -> str:
    """asv's one-character verdict for a baseline -> current row, first match wins:

    ``x``  not comparable (spec hash or environment differ): numbers mean nothing together
    ``!``  newly failing: the baseline succeeded, the current run did not
    ``' '`` both failed, a failure got fixed, or a value is missing: nothing to rank
    ``+``  worse: current > baseline * factor
    ``-``  better: current < baseline / factor
    ``' '`` otherwise: the same within ``factor``
    """
    if factor < 1 or not math.isfinite(factor):
        raise ValueError(f"factor must be a finite number >= 1, got {factor!r}")
    if not comparable:
        return "x"
    if baseline_ok and not current_ok:
        return "!"
    if not (baseline_ok and current_ok) or baseline is None or current is None:
        return " "
    if current > baseline * factor:
        return "+"
    if current < baseline / factor:
        return "-"
    return " "


class CostRow(BaseModel):
    """One matched key of a cost comparison. ``ratio`` is current / baseline median;
    ``messages`` lists failed checks; ``note`` says why a row is not comparable; ``change``
    is the significance test of the per-execution samples (None when the rows carry none,
    or the row is not comparable)."""

    key: str
    mark: str
    baseline_median: float | None = None
    current_median: float | None = None
    ratio: float | None = None
    messages: list[str] = []
    note: str | None = None
    change: Change | None = None

    @property
    def regressed(self) -> bool:
        return bool(self.messages)


def _index(rows: Sequence[Mapping[str, Any]], side: str) -> dict[str, Mapping[str, Any]]:
    out: dict[str, Mapping[str, Any]] = {}
    for row in rows:
        key = str(row["key"])
        if key in out:
            raise ValueError(f"{side} rows: duplicate key {key!r}; rows are matched by key")
        out[key] = row
    return out


def _costs(row: Mapping[str, Any]) -> dict[str, Any]:
    return {**(row.get("stats") or {}), MEMORY_FIELD: row.get("peak_memory_bytes")}


def compare_costs(
    baseline_rows: Sequence[Mapping[str, Any]],
    current_rows: Sequence[Mapping[str, Any]],
    checks: Sequence[Check | SignificantCheck | str] = (),
    *,
    factor: float = 1.1,
    min_effect: float = 0.0,
) -> list[CostRow]:
    """Match rows by ``key`` and judge their medians and checks. Rows with a different
    ``spec_hash`` or ``env_key``, or present on one side only, are marked ``x`` and never
    checked: a changed spec is not a regression. Checks run only when both rows are ok.
    When either row carries ``samples`` (per-execution latencies, seconds), the two are tested
    (harness.analysis.significance, ``min_effect`` a fraction) and the mark follows the test.
    Order: baseline keys as given, then keys new in current."""
    parsed = [c if isinstance(c, (Check, SignificantCheck)) else parse_check(c) for c in checks]
    base, cur = _index(baseline_rows, "baseline"), _index(current_rows, "current")
    out: list[CostRow] = []
    for key in [*base, *(k for k in cur if k not in base)]:
        b, c = base.get(key), cur.get(key)
        b_costs, c_costs = (_costs(b) if b else {}), (_costs(c) if c else {})
        b_med, c_med = b_costs.get("median"), c_costs.get("median")
        note = None
        if b is None or c is None:
            note = "only in current" if b is None else "only in baseline"
        elif b.get("spec_hash") != c.get("spec_hash"):
            note = "spec hash differs"
        elif b.get("env_key") != c.get("env_key"):
            note = "environment differs"
        b_ok, c_ok = bool(b and b.get("ok")), bool(c and c.get("ok"))
        change = None
        if note is None and b is not None and c is not None and b_ok and c_ok and ("samples" in b or "samples" in c):
            change = compare_samples(b.get("samples") or [], c.get("samples") or [], min_effect=min_effect)
        row_mark = mark(b_med, c_med, comparable=note is None, baseline_ok=b_ok, current_ok=c_ok, factor=factor)
        if row_mark in ("+", "-", " ") and change is not None and change.verdict != "no samples":
            row_mark = {"slower": "+", "faster": "-"}.get(change.verdict, " ")
        messages: list[str] = []
        if note is None and b_ok and c_ok:
            for chk in parsed:
                msg = (
                    chk.evaluate_change(change) if isinstance(chk, SignificantCheck) else chk.evaluate(b_costs, c_costs)
                )
                if msg is not None:
                    messages.append(msg)
        ratio = c_med / b_med if b_med and c_med is not None else None
        out.append(
            CostRow(
                key=key,
                mark=row_mark,
                baseline_median=b_med,
                current_median=c_med,
                ratio=ratio,
                messages=messages,
                note=note,
                change=change,
            )
        )
    return out
