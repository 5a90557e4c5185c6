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
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from harness.compare.fingerprint import audio_fingerprint, hamming
from harness.digests import digest_array

# re-exported: callers import the vocabulary and the thresholds from here too
from harness.spec.policy import MAX_FALSE_ACCEPT as MAX_FALSE_ACCEPT
from harness.spec.policy import NamedValidator as NamedValidator
from harness.spec.policy import Thresholds as Thresholds
from harness.vocabulary import LEVELS as LEVELS
from harness.vocabulary import RULE_NAMES as RULE_NAMES
from harness.vocabulary import Level as Level

if TYPE_CHECKING:
    from harness.outputs import Output

SNR_CLAMP_DB = 200.0
#: arrays whose generation step is not axis 0 (token_ids is (choices, new_tokens))
STEP_AXIS = {"token_ids": 1}
_CHUNK = 1 << 20
#: findings a pair can carry besides its level (each is its own line in the report)
WAVEFORM_FINDING = "waveform_far_tokens_equal"
FINDING_TEXT = {
    # the judge names whose bounds (a calibration entry's, or the matrix's own) were exceeded
    WAVEFORM_FINDING: "codes/tokens equal but the waveform is beyond the composite rule's bounds",
    "tokens_differ_output_equal": "token ids differ although the response (the network's result file) is equal: "
    "a different token that decodes to the same text",
}


def waveform_finding_text(bounds_from: str) -> str:
    """The suspicious finding in measured words: which bounds were exceeded, and what can do that."""
    return (
        f"codes/tokens equal but the waveform is beyond {bounds_from}: decoder non-determinism beyond what "
        f"those pairs showed, or tampering"
    )


class Comparison(BaseModel):
    level: Level
    finding: str | None = None  # a key of FINDING_TEXT
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    first_divergence: int | None = None
    steps_total: int | None = None
    #: why the discrete outputs parted (harness.compare.replay.Explanation, as a dict): set by
    #: whoever can replay both sides; ``compare`` itself runs no model
    explanation: dict[str, Any] | None = None


@dataclass
class Comparable:
    """What comparison needs of an output; ``arrays`` may be any lazy mapping."""

    arrays: Mapping[str, np.ndarray]
    digests: dict[str, str]
    discrete: str | None = None
    steps: str | None = None
    sampling_rate: int | None = None
    #: the replay rule's decision for this output (harness.compare.replay.ReplayDecision),
    #: computed on first call; None where nobody can replay it (then the rule does not apply)
    replayed: Callable[[], Any] | None = None

    def digest(self, name: str) -> str | None:
        """The digest of array ``name``: recorded, else computed from the array (None: no such array)."""
        if name in self.digests:
            return self.digests[name]
        return digest_array(self.arrays[name]) if name in self.arrays else None

    def output_digest(self) -> str | None:
        """The whole output's digest (an audio output's is its waveform's)."""
        return self.digests.get("output") or self.digest("waveform")

    def tokens_digest(self) -> str | None:
        """The discrete output's digest (codes or token ids); None for a kind that has none."""
        if not self.discrete:
            return None
        return self.digests.get("tokens") or self.digest(self.discrete)

    @classmethod
    def from_output(cls, out: Output) -> Comparable:
        return cls(
            arrays=out.arrays,
            digests=out.digests(),
            discrete=out.discrete,
            steps=out.steps,
            sampling_rate=out.sampling_rate,
        )


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
        a = xf[s : s + _CHUNK].astype(np.float64)
        b = yf[s : s + _CHUNK].astype(np.float64)
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
    return (
        rel is not None
        and cos is not None
        and rel <= thresholds.rel_l2_max
        and cos >= thresholds.cosine_min
        and length_mismatch(metrics) <= thresholds.max_length_mismatch
    )


_FP_CACHE: dict[tuple[str | None, int, int], np.ndarray] = {}
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


def within_waveform_bounds(metrics: Mapping[str, Any], thresholds: Thresholds) -> bool:
    """The composite rule's waveform half: same length, max-abs and rel-L2 within the
    calibrated bounds (an honest decoder on other hardware stays inside them)."""
    mx, rel = metrics.get("max_abs"), metrics.get("rel_l2")
    return (
        mx is not None
        and rel is not None
        and metrics.get("length_a") == metrics.get("length_b")
        and mx <= thresholds.waveform_max_abs
        and rel <= thresholds.waveform_rel_l2
    )


def compare(
    a: Comparable, b: Comparable, thresholds: Thresholds | None = None, *, bounds_measured: bool = True
) -> Comparison:
    """The strongest level ``a`` and ``b`` reach, with the metrics that decided it.

    ``bitwise`` needs the output digest *and* the discrete output equal: a text response
    that is equal while the token ids differ is ``divergent`` with the finding
    ``tokens_differ_output_equal`` (the network's result-file rule still accepts it; that is
    the agreement model's business). Equal codes whose waveforms lie beyond the calibrated
    bounds stay ``tokens`` with the finding ``waveform_far_tokens_equal``. A bitwise pair
    loads no array (no metrics, no steps)."""
    thr = thresholds or Thresholds()
    da, db = a.output_digest(), b.output_digest()
    ta, tb = a.tokens_digest(), b.tokens_digest()
    tokens_equal = ta is not None and ta == tb
    output_equal = (da is not None and da == db) or (
        da is None and db is None and bool(a.digests) and a.digests == b.digests
    )
    if output_equal and (tokens_equal or (ta is None and tb is None)):
        return Comparison(level="bitwise")
    metrics: dict[str, float | int | None] = {}
    level = "tokens" if tokens_equal else None
    finding = None
    primary = _primary(a, b)
    if primary is not None:
        metrics.update(float_metrics(a.arrays[primary], b.arrays[primary]))
        if level is None and within_tolerance(metrics, thr):
            level = "tolerance"
        # the finding needs bounds measured for this configuration (bounds_measured=False: its
        # calibration has no entry for it, so nothing can be said beyond its bounds)
        if bounds_measured and tokens_equal and primary == "waveform" and not within_waveform_bounds(metrics, thr):
            finding = WAVEFORM_FINDING
    if output_equal and not tokens_equal:
        level, finding = "divergent", "tokens_differ_output_equal"
    if level is None:
        dist = fingerprint_distance(a, b, thr.fingerprint_bits)
        if dist is not None:
            metrics["hamming"] = dist
            if dist <= thr.hamming_max:
                level = "perceptual"
    fd, total = first_divergence(a, b)
    return Comparison(
        level=level or "divergent", finding=finding, metrics=metrics, first_divergence=fd, steps_total=total
    )
