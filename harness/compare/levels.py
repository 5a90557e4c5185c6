"""Comparison levels between two outputs, first divergence, and agreement estimates.

Why levels: "bytes equal" is too strict for audio on mixed hardware and "sounds alike" too
loose for text; each level says which validator a configuration would need (DESIGN.md s4).
Why digests first: comparisons run over ~100,000 records, and most pairs are settled by two
sha256 strings; arrays (possibly lazy, e.g. an ``np.load`` npz) are touched only when the
digests differ.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from harness.digests import digest_array
from harness.compare.fingerprint import audio_fingerprint, hamming
from harness.spec.policy import Thresholds

if TYPE_CHECKING:
    from harness.outputs import Output

LEVELS = ("bitwise", "tokens", "tolerance", "perceptual", "divergent")
Level = Literal["bitwise", "tokens", "tolerance", "perceptual", "divergent"]
SNR_CLAMP_DB = 200.0
#: arrays whose generation step is not axis 0 (token_ids is (choices, new_tokens))
STEP_AXIS = {"token_ids": 1}
_CHUNK = 1 << 20


class Comparison(BaseModel):
    level: Level
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    first_divergence: int | None = None
    steps_total: int | None = None


@dataclass
class Comparable:
    """What comparison needs of an output; ``arrays`` may be any lazy mapping."""

    arrays: Mapping[str, np.ndarray]
    digests: dict[str, str]
    discrete: str | None = None
    steps: str | None = None
    sampling_rate: int | None = None

    @classmethod
    def from_output(cls, out: Output) -> Comparable:
        return cls(arrays=out.arrays, digests=out.digests(), discrete=out.discrete,
                   steps=out.steps, sampling_rate=out.sampling_rate)


def level_rank(level: str) -> int:
    """0 for bitwise (strongest) .. 4 for divergent."""
    try:
        return LEVELS.index(level)
    except ValueError:
        raise ValueError(f"unknown comparison level {level!r}; expected one of {LEVELS}") from None


def worst_level(levels: Iterable[str]) -> str | None:
    """The weakest of ``levels``; None when there are none."""
    ranks = [level_rank(lv) for lv in levels]
    return LEVELS[max(ranks)] if ranks else None


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _array_digest(c: Comparable, name: str) -> str | None:
    if name in c.digests:
        return c.digests[name]
    return digest_array(c.arrays[name]) if name in c.arrays else None


def _output_digest(c: Comparable) -> str | None:
    return c.digests.get("output") or _array_digest(c, "waveform")


def _tokens_digest(c: Comparable) -> str | None:
    if not c.discrete:
        return None
    return c.digests.get("tokens") or _array_digest(c, c.discrete)


def float_metrics(x: np.ndarray, y: np.ndarray) -> dict[str, float | int | None]:
    """Symmetric closeness over the common prefix of axis 0 (chunked float64 sums).

    rel_l2 = ||x - y|| / max(||x||, ||y||) so that compare(a, b) == compare(b, a); SNR is
    the same ratio in dB, clamped to +-200 dB. Non-finite values give None metrics."""
    x, y = np.atleast_1d(np.asarray(x)), np.atleast_1d(np.asarray(y))
    la, lb = int(x.shape[0]), int(y.shape[0])
    out: dict[str, float | int | None] = {"length_a": la, "length_b": lb}
    if x.shape[1:] != y.shape[1:]:
        out.update(rel_l2=None, cosine=None, snr_db=None, max_abs=None)
        return out
    n = min(la, lb)
    xf, yf = x[:n].reshape(-1), y[:n].reshape(-1)
    xx = yy = xy = dd = 0.0
    mx = 0.0
    for s in range(0, xf.size, _CHUNK):
        a = xf[s:s + _CHUNK].astype(np.float64)
        b = yf[s:s + _CHUNK].astype(np.float64)
        d = a - b
        xx += float(np.sum(a * a))  # not BLAS dot: thread-dependent speed and rounding
        yy += float(np.sum(b * b))
        xy += float(np.sum(a * b))
        dd += float(np.sum(d * d))
        mx = max(mx, float(np.max(np.abs(d))))
    if not all(math.isfinite(v) for v in (xx, yy, xy, dd, mx)):
        out.update(rel_l2=None, cosine=None, snr_db=None, max_abs=None)
        return out
    ref = max(xx, yy)
    if dd == 0.0:
        rel, snr = 0.0, SNR_CLAMP_DB
    else:  # ref > 0 whenever dd > 0
        rel = math.sqrt(dd / ref)
        snr = max(-SNR_CLAMP_DB, min(SNR_CLAMP_DB, 10.0 * math.log10(ref / dd)))
    if xx == 0.0 and yy == 0.0:
        cos = 1.0
    elif xx == 0.0 or yy == 0.0:
        cos = 0.0
    else:
        cos = max(-1.0, min(1.0, xy / math.sqrt(xx * yy)))
    out.update(rel_l2=_finite(rel), cosine=_finite(cos), snr_db=_finite(snr), max_abs=_finite(mx))
    return out


def length_mismatch(metrics: Mapping[str, Any]) -> float:
    la, lb = metrics["length_a"], metrics["length_b"]
    return abs(la - lb) / max(la, lb) if max(la, lb) else 0.0


def within_tolerance(metrics: Mapping[str, Any], thresholds: Thresholds) -> bool:
    rel, cos = metrics.get("rel_l2"), metrics.get("cosine")
    return (rel is not None and cos is not None and rel <= thresholds.rel_l2_max
            and cos >= thresholds.cosine_min and length_mismatch(metrics) <= thresholds.max_length_mismatch)


_FP_CACHE: dict[tuple, np.ndarray] = {}
_FP_CACHE_MAX = 65536


def cached_fingerprint(c: Comparable, bits: int) -> np.ndarray | None:
    """Fingerprint of the waveform, memoised by waveform digest (agreement loops reuse it)."""
    if "waveform" not in c.arrays or not c.sampling_rate:
        return None
    key = (c.digests.get("waveform"), int(c.sampling_rate), bits)
    if key[0] is not None and key in _FP_CACHE:
        return _FP_CACHE[key]
    fp = audio_fingerprint(c.arrays["waveform"], int(c.sampling_rate), bits=bits)
    if key[0] is not None:
        if len(_FP_CACHE) >= _FP_CACHE_MAX:
            _FP_CACHE.pop(next(iter(_FP_CACHE)))
        _FP_CACHE[key] = fp
    return fp


def fingerprint_distance(a: Comparable, b: Comparable, bits: int = 64) -> int | None:
    """Hamming distance of waveform fingerprints; None without audio or at different rates."""
    if a.sampling_rate != b.sampling_rate:
        return None
    fa, fb = cached_fingerprint(a, bits), cached_fingerprint(b, bits)
    return None if fa is None or fb is None else hamming(fa, fb)


def first_divergence(a: Comparable, b: Comparable) -> tuple[int | None, int | None]:
    """(first step index where the ``steps`` arrays differ, total steps) -- exact equality,
    floats included; a shorter run diverges where it stops. (None, None) without steps."""
    name = a.steps
    if not name or name != b.steps or name not in a.arrays or name not in b.arrays:
        return None, None
    x, y = np.asarray(a.arrays[name]), np.asarray(b.arrays[name])
    axis = STEP_AXIS.get(name, 0)
    if x.ndim <= axis or y.ndim <= axis:
        return None, None
    x, y = np.moveaxis(x, axis, 0), np.moveaxis(y, axis, 0)
    total = max(x.shape[0], y.shape[0])
    if x.shape[1:] != y.shape[1:]:
        return (0 if total else None), total
    n = min(x.shape[0], y.shape[0])
    if a.digests.get(name) is not None and a.digests.get(name) == b.digests.get(name):
        return None, total
    differ = (x[:n] != y[:n]).reshape(n, -1).any(axis=1)
    if differ.any():
        return int(np.argmax(differ)), total
    return (n if x.shape[0] != y.shape[0] else None), total


def _primary(a: Comparable, b: Comparable) -> str | None:
    for name in ("waveform", "latents"):
        if name in a.arrays and name in b.arrays:
            return name
    return None


def compare(a: Comparable, b: Comparable, thresholds: Thresholds | None = None, *,
            stop_at: str | None = None) -> Comparison:
    """The strongest level ``a`` and ``b`` reach, with the metrics that decided it.

    A bitwise pair loads no array (no metrics, no steps). ``stop_at``: stop as soon as it is
    clear whether the pair reaches that level (for agreement rules); the level returned is
    then exact when reached, else only known to be weaker."""
    thr = thresholds or Thresholds()
    da, db = _output_digest(a), _output_digest(b)
    if (da is not None and da == db) or (da is None and db is None and a.digests and a.digests == b.digests):
        return Comparison(level="bitwise")
    target = level_rank(stop_at) if stop_at else len(LEVELS)
    if target == 0:
        return Comparison(level="divergent")
    ta, tb = _tokens_digest(a), _tokens_digest(b)
    tokens_equal = ta is not None and ta == tb
    if stop_at and (tokens_equal or target == 1):
        return Comparison(level="tokens" if tokens_equal else "divergent")
    metrics: dict[str, float | int | None] = {}
    level = "tokens" if tokens_equal else None
    primary = _primary(a, b)
    if primary is not None:
        metrics.update(float_metrics(a.arrays[primary], b.arrays[primary]))
        if level is None and within_tolerance(metrics, thr):
            level = "tolerance"
    if level is None and not (stop_at and target < 3):
        dist = fingerprint_distance(a, b, thr.fingerprint_bits)
        if dist is not None:
            metrics["hamming"] = dist
            if dist <= thr.hamming_max:
                level = "perceptual"
    fd, total = (None, None) if stop_at else first_divergence(a, b)
    return Comparison(level=level or "divergent", metrics=metrics, first_divergence=fd, steps_total=total)


def rule_for_level(level: str, thresholds: Thresholds | None = None) -> Callable[[Comparable, Comparable], bool]:
    """A pair rule: True when the pair agrees at ``level`` or stronger."""
    rank = level_rank(level)
    thr = thresholds or Thresholds()

    def rule(a: Comparable, b: Comparable) -> bool:
        if rank == len(LEVELS) - 1:
            return True
        return level_rank(compare(a, b, thr, stop_at=level).level) <= rank

    rule.__name__ = f"agree_at_{level}"
    return rule


def _content_key(c: Comparable) -> tuple:
    if not c.digests:
        return (id(c),)
    return (tuple(sorted(c.digests.items())), c.discrete, c.steps, c.sampling_rate)


def _sample_triples(n: int, count: int, seed: int) -> np.ndarray:
    """``count`` triples of distinct indices in [0, n), drawn uniformly."""
    rng = np.random.default_rng(seed)
    out = rng.integers(0, n, size=(count, 3))
    while True:
        bad = (out[:, 0] == out[:, 1]) | (out[:, 0] == out[:, 2]) | (out[:, 1] == out[:, 2])
        if not bad.any():
            return np.sort(out, axis=1)
        out[bad] = rng.integers(0, n, size=(int(bad.sum()), 3))


def agreement_probabilities(outputs: list[Comparable], rule: Callable[[Comparable, Comparable], bool], *,
                            max_triples: int = 20000, seed: int = 0) -> dict[str, float | int | None]:
    """Chance that 3 nodes drawn from these independent executions all agree (p3of3) and
    that some 2 of them agree (p2of3, the network's majority), under a pair ``rule``.

    Outputs with the same digests are one content class; the rule runs once per pair of
    classes. Triples are counted exactly by class multiplicities (O(k^3) in the k distinct
    contents, however many executions there are); with very many distinct contents,
    ``max_triples`` triples are sampled (seeded) instead."""
    n = len(outputs)
    keys: dict[tuple, int] = {}
    reps: list[Comparable] = []
    counts: list[int] = []
    cls: list[int] = []
    for o in outputs:
        key = _content_key(o)
        if key not in keys:
            keys[key] = len(reps)
            reps.append(o)
            counts.append(0)
        counts[keys[key]] += 1
        cls.append(keys[key])
    cache: dict[tuple[int, int], bool] = {}

    def agree(ci: int, cj: int) -> bool:
        if ci > cj:
            ci, cj = cj, ci
        if (ci, cj) not in cache:
            cache[(ci, cj)] = True if ci == cj else bool(rule(reps[ci], reps[cj]))
        return cache[(ci, cj)]

    if n < 3:
        pairs = [agree(cls[0], cls[1])] if n == 2 else []
        return {"p3of3": None, "p2of3": None, "triples": 0,
                "pairs_agree": float(np.mean(pairs)) if pairs else None}
    k = len(reps)
    total = math.comb(n, 3)
    all3 = any2 = pairs_ok = 0
    if k ** 3 <= 6 * max_triples or total <= max_triples:
        for i in range(k):
            for j in range(i, k):
                for m in range(j, k):
                    if i == j == m:
                        w = math.comb(counts[i], 3)
                    elif i == j:
                        w = math.comb(counts[i], 2) * counts[m]
                    elif j == m:
                        w = counts[i] * math.comb(counts[j], 2)
                    else:
                        w = counts[i] * counts[j] * counts[m]
                    if w:
                        s = agree(i, j) + agree(i, m) + agree(j, m)
                        pairs_ok += s * w
                        all3 += w * (s == 3)
                        any2 += w * (s > 0)
        count = total
    else:
        count = max_triples
        for i, j, m in _sample_triples(n, max_triples, seed).tolist():
            s = agree(cls[i], cls[j]) + agree(cls[i], cls[m]) + agree(cls[j], cls[m])
            pairs_ok += s
            all3 += s == 3
            any2 += s > 0
    return {"p3of3": all3 / count, "p2of3": any2 / count, "triples": count,
            "pairs_agree": pairs_ok / (3 * count)}
