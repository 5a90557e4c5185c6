"""Candidate audio validation rules for the network, and cheats to measure them against.

Why: the network checks text by SHA-256 and images by pHash, and has no audio rule. Each
candidate rule here is a pure function ``(reference, candidate, thresholds) -> bool``; its
worth is two numbers: how often it rejects an honest node on other hardware (false reject)
and how often it accepts a dishonest one (false accept). The cheats below are the cheap
waveform edits a dishonest node could make; cheats that need the engine (another seed,
another prompt) are produced by the callers that run it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from harness.compare.levels import (
    RULE_NAMES,
    Comparable,
    Thresholds,
    fingerprint_distance,
    float_metrics,
    within_tolerance,
    within_waveform_bounds,
)
from harness.digests import digest_array
from harness.spec.kinds import KINDS, KindSpec

Validator = Callable[[Comparable, Comparable, Thresholds | None], bool]
Pair = tuple[Comparable, Comparable]


def result_hash(reference: Comparable, candidate: Comparable, thresholds: Thresholds | None = None) -> bool:
    """The network's text rule: sha256 of the whole result (the response JSON, ``usage``
    included; for audio the canonical waveform bytes)."""
    a = reference.output_digest()
    return a is not None and a == candidate.output_digest()


def bitwise(reference: Comparable, candidate: Comparable, thresholds: Thresholds | None = None) -> bool:
    """Result hash AND discrete output equal: what the ``bitwise`` level means."""
    if not result_hash(reference, candidate):
        return False
    return reference.tokens_digest() == candidate.tokens_digest()


def tokens(reference: Comparable, candidate: Comparable, thresholds: Thresholds | None = None) -> bool:
    """Equal discrete output (EnCodec codes / token ids): blind to what the audio is."""
    a = reference.tokens_digest()
    return a is not None and a == candidate.tokens_digest()


def _waveform_metrics(reference: Comparable, candidate: Comparable) -> dict[str, float | int | None] | None:
    if "waveform" not in reference.arrays or "waveform" not in candidate.arrays:
        return None
    return float_metrics(reference.arrays["waveform"], candidate.arrays["waveform"])


def tolerance(reference: Comparable, candidate: Comparable, thresholds: Thresholds | None = None) -> bool:
    """rel-L2 and cosine on the waveform (common prefix, length mismatch bounded)."""
    if reference.digest("waveform") is not None and reference.digest("waveform") == candidate.digest("waveform"):
        return True
    metrics = _waveform_metrics(reference, candidate)
    return metrics is not None and within_tolerance(metrics, thresholds or Thresholds())


def perceptual(reference: Comparable, candidate: Comparable, thresholds: Thresholds | None = None) -> bool:
    """Hamming distance of spectral fingerprints, like the network's image pHash rule. Its
    measured false accept is far above 1%: never a verdict's basis unless a calibration says
    otherwise for that model."""
    if reference.digest("waveform") is not None and reference.digest("waveform") == candidate.digest("waveform"):
        return True
    thr = thresholds or Thresholds()
    dist = fingerprint_distance(reference, candidate, thr.fingerprint_bits)
    return dist is not None and dist <= thr.hamming_max


def composite_judged(
    reference: Comparable, candidate: Comparable, thresholds: Thresholds | None = None
) -> tuple[bool, float]:
    """The composite rule's decision and its score, from one measurement of the waveforms (a
    calibration judges every held-out pair and cheat both ways)."""
    if not tokens(reference, candidate):
        return False, float("inf")
    if reference.digest("waveform") is not None and reference.digest("waveform") == candidate.digest("waveform"):
        return True, 0.0
    m = _waveform_metrics(reference, candidate)
    if m is None:
        return False, float("inf")
    thr = thresholds or Thresholds()
    accepted = within_waveform_bounds(m, thr)
    if m.get("max_abs") is None or m["length_a"] != m["length_b"]:
        return accepted, float("inf")
    return accepted, max(
        float(m["max_abs"] or 0.0) / max(thr.waveform_max_abs, 1e-30),
        float(m["rel_l2"] or 0.0) / max(thr.waveform_rel_l2, 1e-30),
    )


def composite(reference: Comparable, candidate: Comparable, thresholds: Thresholds | None = None) -> bool:
    """Codes equal AND the waveform within the calibrated max-abs / rel-L2 bounds: an honest
    float wobble passes, honest codes sent with edited audio do not."""
    return composite_judged(reference, candidate, thresholds)[0]


def composite_score(reference: Comparable, candidate: Comparable, thresholds: Thresholds | None = None) -> float:
    """The composite rule as a score: accepted iff <= 1 at ``thresholds``, and at bounds scaled by
    t iff <= t (a DET curve sweeps t); infinite when the codes or the lengths differ."""
    return composite_judged(reference, candidate, thresholds)[1]


def replay(reference: Comparable, candidate: Comparable, thresholds: Thresholds | None = None) -> bool:
    """Each output replays against the task (harness.compare.replay): its tokens are the ones the
    seed samples on the validator's model, near-ties within the calibrated margin, and its result
    is built from them. The two are not compared with each other; a task that cannot be replayed
    is never accepted."""
    if reference.replayed is None or candidate.replayed is None:
        return False
    return reference.replayed().accepted is True and candidate.replayed().accepted is True


#: every pair rule by its one name (the same words as the comparison levels, plus the two
#: rules that are no level: ``composite`` and the network's ``result_hash``)
RULES: dict[str, Validator] = {
    "result_hash": result_hash,
    "bitwise": bitwise,
    "tokens": tokens,
    "tolerance": tolerance,
    "perceptual": perceptual,
    "composite": composite,
    "replay": replay,
}
assert tuple(RULES) == RULE_NAMES
#: the audio candidates the validator study measures
VALIDATORS: dict[str, Validator] = {
    name: RULES[name] for name in ("bitwise", "tokens", "tolerance", "perceptual", "composite")
}
#: rules that need a waveform (not applicable to text outputs)
WAVEFORM_RULES = ("tolerance", "perceptual", "composite")


def network_rule(kind: str) -> tuple[str, str]:
    """(rule name, label): the rule a 3-node validation group applies to a task kind, and
    whether the network has it (its ``KindSpec.network_rule``); unknown kinds get the result hash."""
    spec = KINDS.get(kind) if kind in KINDS else None
    return spec.network_rule if spec else KindSpec.model_fields["network_rule"].default


def applicable(rule: str, a: Comparable, b: Comparable) -> bool:
    """Waveform rules do not apply to outputs without a waveform (text); replay applies only
    where both outputs can be replayed (the matrix names it for the kind)."""
    if rule == "replay":
        return a.replayed is not None and b.replayed is not None
    return rule not in WAVEFORM_RULES or ("waveform" in a.arrays and "waveform" in b.arrays)


# --- cheats: a dishonest waveform made from an honest one (pure numpy, seeded) ---------------


def _as_2d(waveform: np.ndarray) -> np.ndarray:
    wav = np.asarray(waveform, dtype=np.float32)
    return wav[:, None] if wav.ndim == 1 else wav


def add_noise(waveform: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """Gaussian noise at ``snr_db`` below the signal's power (full scale when silent)."""
    wav = _as_2d(waveform)
    power = float(np.mean(wav.astype(np.float64) ** 2)) if wav.size else 0.0
    std = np.sqrt((power or 1.0) / 10 ** (snr_db / 10))
    noise = np.random.default_rng(seed).normal(0.0, std, size=wav.shape)
    return (wav + noise).astype(np.float32)


def time_shift(waveform: np.ndarray, samples: int) -> np.ndarray:
    """Delay (positive) or advance (negative) by ``samples``, zero-filled, same length."""
    wav = _as_2d(waveform)
    out = np.zeros_like(wav)
    n = wav.shape[0]
    k = int(samples)
    if abs(k) < n:
        if k >= 0:
            out[k:] = wav[: n - k]
        else:
            out[: n + k] = wav[-k:]
    return out


def truncate(waveform: np.ndarray, fraction: float, keep_length: bool = False) -> np.ndarray:
    """Drop the last ``fraction`` of the samples (a node that stopped early); with
    ``keep_length`` the dropped tail is zero-filled instead."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    wav = _as_2d(waveform)
    keep = int(round(wav.shape[0] * (1.0 - fraction)))
    if not keep_length:
        return wav[:keep].copy()
    out = np.zeros_like(wav)
    out[:keep] = wav[:keep]
    return out


def lower_precision(waveform: np.ndarray, dtype: str = "float16") -> np.ndarray:
    """Round through float16 or bfloat16 (round-to-nearest-even on the top 16 bits) and
    back to float32: what a node running a cheaper dtype would return."""
    wav = _as_2d(waveform)
    if dtype == "float16":
        with np.errstate(over="ignore"):
            return wav.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        bits = np.ascontiguousarray(wav).view(np.uint32).astype(np.uint64)
        rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        out = rounded.astype(np.uint32).view(np.float32)
        return np.where(np.isnan(wav), wav, out).astype(np.float32)
    raise ValueError(f"dtype must be 'float16' or 'bfloat16', got {dtype!r}")


def with_waveform(honest: Comparable, waveform: np.ndarray, keep_codes: bool = False) -> Comparable:
    """A candidate carrying ``waveform`` instead of the honest one. Codes are dropped by
    default: a node that edits audio after the fact cannot make codes that decode to it."""
    wav = _as_2d(waveform)
    arrays = {"waveform": wav}
    if keep_codes and "codes" in honest.arrays:
        arrays["codes"] = honest.arrays["codes"]
    digests = {name: digest_array(arr) for name, arr in arrays.items()}
    digests["output"] = digests["waveform"]
    discrete = "codes" if "codes" in arrays else None
    if discrete:
        digests["tokens"] = digests["codes"]
    return Comparable(
        arrays=arrays, digests=digests, discrete=discrete, steps=discrete, sampling_rate=honest.sampling_rate
    )


def error_rates(
    honest_pairs: Iterable[Pair],
    cheat_pairs: Iterable[Pair],
    validators: Mapping[str, Validator] | None = None,
    thresholds: Thresholds | None = None,
) -> pd.DataFrame:
    """Per validator: share of honest pairs rejected and of cheat pairs accepted (NaN when
    there are no pairs of that kind)."""
    honest, cheats = list(honest_pairs), list(cheat_pairs)
    thr = thresholds or Thresholds()
    rows = []
    for name, fn in (validators or VALIDATORS).items():
        rejected = sum(not fn(ref, cand, thr) for ref, cand in honest)
        accepted = sum(bool(fn(ref, cand, thr)) for ref, cand in cheats)
        rows.append(
            {
                "validator": name,
                "false_reject_rate": rejected / len(honest) if honest else float("nan"),
                "false_accept_rate": accepted / len(cheats) if cheats else float("nan"),
                "honest_pairs": len(honest),
                "cheat_pairs": len(cheats),
            }
        )
    return pd.DataFrame(
        rows, columns=["validator", "false_reject_rate", "false_accept_rate", "honest_pairs", "cheat_pairs"]
    )
