"""Is a cost change real? A two-sample test over per-execution samples, as pyperf's compare_to asks.

pyperf (psf/pyperf, ``pyperf/_utils.py`` ``is_significant`` and ``pyperf/_compare.py``) calls a
change significant when Student's two-sample t-test rejects at 95% (two-tailed, pooled
variance, a table of critical values); ``--min-speed PCT`` makes a smaller change "not
significant"; otherwise it prints "Not significant!". Its ``tscore`` refuses samples of
different sizes, and ``compare_to`` then calls the change significant anyway (a FIXME there).

Here the test is **Mann-Whitney U** (``scipy.stats.mannwhitneyu``, two-sided, at 95%) and the
effect is the **Hodges-Lehmann ratio** current / baseline (the median of all pairwise ratios
``y_j / x_i``) with its distribution-free 95% interval (Lehmann 1963, Bauer 1972: order
statistics of the pairwise log ratios at the U test's own critical value, so the interval
excludes 1 exactly when the test rejects, ties aside). Why not pyperf's t-test: latencies are
skewed with a long right tail (a garbage collection, a noisy neighbour, a page fault), one
slow execution moves the mean and inflates the variance at once, and the two sides of a
comparison rarely hold the same number of executions (warm-ups, failed cells). A rank test
needs neither normality nor equal sizes, one outlier moves it by at most one rank, and the
Hodges-Lehmann ratio is the matching estimate: a uniform 10% slowdown is a ratio of 1.10
whatever the spread.

``--min-effect`` works as pyperf's ``--min-speed``: a significant change whose size (the ratio,
or its inverse for a speed-up, minus one) is below it is reported as not significant, with
the reason.

Pure functions over numbers: no timers, no records.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

ALPHA = 0.05  # two-sided: a 95% test and a 95% interval
TEST = "Mann-Whitney U"
MAX_PAIRS_SIDE = 2000  # the interval is computed on at most this many order statistics per side
Verdict = Literal["slower", "faster", "not significant", "below min effect", "no samples"]


class Change(BaseModel):
    """The verdict on one baseline -> current comparison of per-execution samples.

    ``ratio`` is the Hodges-Lehmann estimate of current / baseline (1.10: 10% slower);
    ``ratio_low``/``ratio_high`` its 95% interval (None: unbounded, too few samples for one).
    ``significant`` is the test's answer alone; ``verdict`` also applies ``min_effect``."""

    model_config = ConfigDict(frozen=True)

    verdict: Verdict
    significant: bool = False
    n_baseline: int = 0
    n_current: int = 0
    test: str = TEST
    method: str | None = None  # "exact" or "asymptotic" (scipy's choice)
    u: float | None = None  # U of the current sample
    p_value: float | None = None
    ratio: float | None = None
    ratio_low: float | None = None
    ratio_high: float | None = None
    scale: Literal["ratio", "difference"] = "ratio"  # "difference" when a sample is <= 0 (no ratio exists)
    alpha: float = ALPHA
    min_effect: float = 0.0  # fraction: 0.05 is 5%

    @property
    def changed(self) -> bool:
        return self.verdict in ("slower", "faster")

    @property
    def percent(self) -> float | None:
        return None if self.ratio is None else (self.ratio - 1.0) * 100.0

    @property
    def text(self) -> str:
        """One line: ``+10.2% slower [95% CI +8.9%, +11.6%], Mann-Whitney U p=1.2e-09 (40 vs 40)``
        or ``not significant: +0.4% [95% CI -1.2%, +2.0%], ... p=0.62 (40 vs 40)``."""
        if self.verdict == "no samples":
            return f"no samples to test ({self.n_baseline} vs {self.n_current})"
        level = round((1 - self.alpha) * 100)
        if self.ratio_low is None or self.ratio_high is None:
            interval = f"[{level}% CI unbounded: too few samples]"
        else:
            interval = f"[{level}% CI {_pct(self.ratio_low)}, {_pct(self.ratio_high)}]"
        tail = f"{self.test} p={_p(self.p_value)} ({self.n_baseline} vs {self.n_current})"
        effect = f"{_pct(self.ratio)} {interval}"
        if self.verdict in ("slower", "faster"):
            return f"{_pct(self.ratio)} {self.verdict} {interval}, {tail}"
        if self.verdict == "below min effect":
            return f"not significant: {effect} is below --min-effect {self.min_effect * 100:g}%, {tail}"
        return f"not significant: {effect}, {tail}"


def _pct(ratio: float | None) -> str:
    if ratio is None:
        return "?"
    change = (ratio - 1.0) * 100.0
    return f"{change:+.1f}%" if abs(change) >= 0.05 or change == 0 else f"{change:+.2g}%"


def _p(p: float | None) -> str:
    if p is None:
        return "?"
    return f"{p:.2g}" if p < 0.01 else f"{p:.2f}"


def parse_min_effect(text: str) -> float:
    """``5%`` (or ``5``) -> 0.05: a percentage, finite and >= 0; ValueError naming the text."""
    raw = str(text).strip()
    number = raw[:-1].strip() if raw.endswith("%") else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"min effect {text!r}: expected a percentage, e.g. '5%'") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"min effect {text!r}: must be a finite percentage >= 0")
    return value / 100.0


def _clean(samples: Sequence[float], side: str) -> npt.NDArray[np.float64]:
    values = np.asarray([float(x) for x in samples], dtype=float)
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError(f"{side} samples must be finite numbers")
    return values


def _thin(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """At most MAX_PAIRS_SIDE evenly spaced order statistics (the interval's pairwise
    differences grow as m * n; the test itself always sees every sample)."""
    if values.size <= MAX_PAIRS_SIDE:
        return values
    ordered = np.sort(values)
    thinned: npt.NDArray[np.float64] = ordered[np.linspace(0, ordered.size - 1, MAX_PAIRS_SIDE).round().astype(int)]
    return thinned


def _exact_lower_tail(m: int, n: int) -> list[float]:
    """P(U <= u) for u = 0..m*n under the null, without ties: the coefficients of the Gaussian
    binomial [m+n choose m]_q, built exactly in integers (symmetric in m and n)."""
    m, n = min(m, n), max(m, n)
    poly = [1]
    for i in range(1, m + 1):
        grown = poly + [0] * (n + i)  # times (1 - q^(n+i))
        for k in range(len(grown) - 1, n + i - 1, -1):
            grown[k] -= grown[k - n - i]
        for k in range(i, len(grown)):  # divided by (1 - q^i): exact for this product
            grown[k] += grown[k - i]
        poly = grown[: m * n + 1]
    total = math.comb(m + n, m)
    out, running = [], 0
    for c in poly:
        running += c
        out.append(running / total)
    return out


def _critical(m: int, n: int, alpha: float, exact: bool, tie_sum: float) -> int:
    """The largest c with P(U <= c) <= alpha / 2 (-1 when none): the interval is the
    (c+1)-th smallest and (c+1)-th largest pairwise difference."""
    if exact:
        lower = _exact_lower_tail(m, n)
        c = -1
        for u, p in enumerate(lower):
            if p <= alpha / 2 + 1e-12:
                c = u
            else:
                break
        return c
    from scipy.stats import norm

    total = m + n
    var = m * n / 12.0 * ((total + 1) - tie_sum / (total * (total - 1)))
    if var <= 0:
        return -1
    z = float(norm.ppf(1 - alpha / 2))  # scipy is untyped: ppf of a scalar is a numpy float
    return math.floor(m * n / 2.0 - 0.5 - z * math.sqrt(var))


def compare_samples(
    baseline: Sequence[float], current: Sequence[float], *, min_effect: float = 0.0, alpha: float = ALPHA
) -> Change:
    """Test current against baseline (lower is better: seconds). See the module docstring."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not math.isfinite(min_effect) or min_effect < 0:
        raise ValueError(f"min_effect must be a finite fraction >= 0, got {min_effect!r}")
    x, y = _clean(baseline, "baseline"), _clean(current, "current")
    base = {"n_baseline": int(x.size), "n_current": int(y.size), "alpha": alpha, "min_effect": min_effect}
    if x.size == 0 or y.size == 0:
        return Change(verdict="no samples", **base)
    from scipy.stats import mannwhitneyu

    pooled = np.concatenate([x, y])
    ties = np.unique(pooled).size < pooled.size
    # scipy's own rule for method="auto", chosen here so that the interval uses the same one
    method = "asymptotic" if (x.size > 8 and y.size > 8) or ties else "exact"
    if np.all(pooled == pooled[0]):  # one value on both sides: nothing to test (the variance is 0)
        u, p = x.size * y.size / 2.0, 1.0
    else:
        res = mannwhitneyu(y, x, alternative="two-sided", method=method)
        u, p = float(res.statistic), float(min(1.0, res.pvalue))
    positive = bool(np.all(x > 0) and np.all(y > 0))
    tx, ty = (np.log(x), np.log(y)) if positive else (x, y)
    tx, ty = _thin(tx), _thin(ty)
    diffs = (ty[None, :] - tx[:, None]).ravel()
    m, n = tx.size, ty.size
    pooled_t = np.concatenate([tx, ty])
    _, counts = np.unique(pooled_t, return_counts=True)
    tie_sum = float(np.sum(counts.astype(float) ** 3 - counts))
    c = _critical(m, n, alpha, method == "exact" and tie_sum == 0, tie_sum)
    shift = float(np.median(diffs))
    low: float | None
    high: float | None
    if c >= 0 and c + 1 <= diffs.size - c:
        k = c  # 0-based index of the (c+1)-th order statistic
        ordered = np.partition(diffs, (k, diffs.size - 1 - k))
        low, high = float(ordered[k]), float(ordered[diffs.size - 1 - k])
    else:
        low = high = None
    to_ratio: Callable[[float], float]
    if positive:
        to_ratio = math.exp
    else:
        centre = float(np.median(x))
        if centre == 0:
            centre = 1.0

        def linear_ratio(d: float) -> float:
            return 1.0 + d / abs(centre)

        to_ratio = linear_ratio

    ratio = to_ratio(shift)
    ratio_low = None if low is None else to_ratio(low)
    ratio_high = None if high is None else to_ratio(high)
    significant = p < alpha
    if not significant:
        verdict: Verdict = "not significant"
    else:
        size = (max(ratio, 1 / ratio) if ratio > 0 else math.inf) - 1.0
        if size < min_effect:
            verdict = "below min effect"
        else:
            verdict = "slower" if ratio > 1 else "faster" if ratio < 1 else "not significant"
    return Change(
        verdict=verdict,
        significant=significant,
        method=method,
        u=u,
        p_value=p,
        ratio=ratio,
        ratio_low=ratio_low,
        ratio_high=ratio_high,
        scale="ratio" if positive else "difference",
        **base,
    )
