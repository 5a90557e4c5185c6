"""The cheats a calibration measures a rule against, made from a study's own outputs.

Why from the study's outputs: a rule's false accept is only worth the cheats it was measured
on, and the cheap cheats of a dishonest node are other real outputs of the same model (another
seed's, another prompt's, a cheaper configuration's) and edits of an honest output. Each kind
names its cheat maker on its KindSpec (``cheats``: rule -> "module:function"); the calibration
(harness.workflows.calibrate) hands it a ``CheatSources`` per held-out task and measures the
rule on every candidate it returns.

Audio (MusicGen), each claiming to be the task's output:

- another seed's and another prompt's real output; a lower precision passed off (the same task
  under a cheaper configuration the study ran);
- truncation (the clip cut short; with the codes cut to match);
- edits with the honest codes kept: noise at 30 dB, the waveform rounded through bfloat16 (a
  cheaper decode: only where the configuration claims more precision than bfloat16), a quiet
  uniform overdub and an overdub of another prompt's audio at multiples of the honest spread;
- token swaps: another seed's codes with the honest waveform, one code forced (at the position
  the validator's replay was most confident about where a model is at hand, else the middle
  frame of the first codebook), a partial re-generation (the honest codes up to a fraction,
  another seed's after, the audio spliced at the same point or re-decoded).

Without the validator's model (the composite rule) the audio of a token swap cannot be
re-decoded, so a swap keeps the honest or spliced audio: the rule must see the codes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from harness.compare.levels import Comparable
from harness.compare.validators import add_noise, lower_precision, truncate, with_waveform
from harness.digests import digest_array

#: low-amplitude edits and overdubs, as multiples of the honest spread (composite: the
#: calibration half's largest honest max-abs; replay: the calibrated decoder bound)
EDIT_SPREADS = (3.0, 10.0)
PARTIAL_FROM = (0.25, 0.5)  # re-generated from this fraction of the frames on
TRUNCATE = (0.1, 0.5)
TRUNCATED_FRAMES = 4  # codes cut short by this many frames
#: dtypes whose output rounded through bfloat16 is no cheaper computation than asked
LOW_PRECISION = ("bfloat16",)


@dataclass(frozen=True)
class CheatSources:
    """What one task's cheats are made from."""

    honest: Comparable  # the task's honest output on other hardware (what a cheater edits)
    other_seed: Comparable | None = None  # the same prompt, another seed
    other_prompt: Comparable | None = None  # another prompt, the same seed
    lower: Mapping[str, Comparable] = field(default_factory=dict)  # "bfloat16" -> the task under it
    spread: float = 1e-9  # the honest spread the edits scale with
    noise_seed: int = 0
    #: codes -> waveform with the validator's model (None: no model at hand, e.g. composite)
    redecode: Callable[[np.ndarray], np.ndarray] | None = None
    #: (frame, codebook, code) of the validator's most confident position and its runner-up
    confident: tuple[int, int, int] | None = None
    claimed_dtype: str = "float32"  # the configuration's dtype (a cheaper decode is a cheat only below it)


def audio_comparable(waveform: np.ndarray, codes: np.ndarray, rate: int) -> Comparable:
    """An audio candidate from its waveform and codes (digests as a record's)."""
    arrays: dict[str, np.ndarray] = {"waveform": np.asarray(waveform, np.float32), "codes": np.asarray(codes, np.int64)}
    digests = {k: digest_array(v) for k, v in arrays.items()}
    digests.update(output=digests["waveform"], tokens=digests["codes"])
    return Comparable(arrays=arrays, digests=digests, discrete="codes", steps="codes", sampling_rate=int(rate))


def quiet_edit(wav: np.ndarray, amplitude: float, seed: int) -> np.ndarray:
    """A low-amplitude edit: uniform noise with max-abs ``amplitude`` (a quiet overdub)."""
    noise = np.random.default_rng(seed).uniform(-1.0, 1.0, size=np.shape(wav)).astype(np.float64)
    noise *= amplitude / max(float(np.max(np.abs(noise))), 1e-30)
    return (np.asarray(wav, np.float64) + noise).astype(np.float32)


def overdub(wav: np.ndarray, other: np.ndarray, amplitude: float) -> np.ndarray:
    """Another clip mixed in, scaled to max-abs ``amplitude`` (zero-padded or cut to length)."""
    base = np.asarray(wav, np.float64)
    mix = np.zeros_like(base)
    src = np.asarray(other, np.float64).reshape(-1, *base.shape[1:]) if base.ndim > 1 else np.ravel(other)
    n = min(base.shape[0], src.shape[0])
    mix[:n] = src[:n]
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    return (base + mix * (amplitude / peak if peak > 0 else 0.0)).astype(np.float32)


def splice_codes(codes: np.ndarray, other: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    """The honest codes up to frame k, the other run's after (and k)."""
    ca, cb = np.asarray(codes), np.asarray(other)
    k = max(1, int(round(ca.shape[0] * fraction)))
    spliced = np.concatenate([ca[:k], cb[k : ca.shape[0]]]) if cb.shape[0] >= ca.shape[0] else ca.copy()
    return spliced, k


def _splice_audio(honest: Comparable, other: Comparable, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    codes, k = splice_codes(honest.arrays["codes"], other.arrays["codes"], fraction)
    wa, wb = np.asarray(honest.arrays["waveform"]), np.asarray(other.arrays["waveform"])
    cut = int(round(wa.shape[0] * k / max(np.asarray(honest.arrays["codes"]).shape[0], 1)))
    wav = np.concatenate([wa[:cut], wb[cut : wa.shape[0]]]) if wb.shape[0] >= wa.shape[0] else wa.copy()
    return codes, wav


def _forced(codes: np.ndarray, confident: tuple[int, int, int] | None) -> np.ndarray:
    out = np.asarray(codes).copy()
    if confident is not None:
        frame, book, code = confident
        out[frame, book] = code
    else:  # no model: the middle frame of the first codebook, to another code
        out[out.shape[0] // 2, 0] = (out[out.shape[0] // 2, 0] + 1) % max(int(out.max()) + 1, 2)
    return out


def audio_cheats(src: CheatSources) -> list[tuple[str, Comparable]]:
    """MusicGen's cheats (module docstring), each named by what it is."""
    h = src.honest
    wav, codes, rate = np.asarray(h.arrays["waveform"]), np.asarray(h.arrays["codes"]), h.sampling_rate or 1
    made: list[tuple[str, Comparable]] = []
    if src.other_seed is not None:
        made.append(("another seed", src.other_seed))
    if src.other_prompt is not None:
        made.append(("another prompt", src.other_prompt))
    made += [(f"{label} passed off", c) for label, c in sorted(src.lower.items())]
    made += [(f"truncated {int(f * 100)}%", with_waveform(h, truncate(wav, f))) for f in TRUNCATE]
    cut = codes[:-TRUNCATED_FRAMES] if codes.shape[0] > TRUNCATED_FRAMES else codes[:1]
    cut_wav = src.redecode(cut) if src.redecode else truncate(wav, 1 - cut.shape[0] / max(codes.shape[0], 1))
    made.append((f"truncated ({TRUNCATED_FRAMES} frames), codes cut to match", audio_comparable(cut_wav, cut, rate)))
    made.append(
        ("noise 30 dB, honest codes kept", with_waveform(h, add_noise(wav, 30.0, seed=src.noise_seed), keep_codes=True))
    )
    if src.claimed_dtype not in LOW_PRECISION:
        made.append(
            (
                "honest codes, waveform rounded through bfloat16",
                with_waveform(h, lower_precision(wav, "bfloat16"), True),
            )
        )
    for k in EDIT_SPREADS:
        edited = quiet_edit(wav, src.spread * k, src.noise_seed)
        made.append((f"quiet edit {k:g}x the honest spread, honest codes kept", with_waveform(h, edited, True)))
        if src.other_prompt is not None:
            dub = overdub(wav, np.asarray(src.other_prompt.arrays["waveform"]), src.spread * k)
            made.append((f"overdub {k:g}x the honest spread, honest codes kept", with_waveform(h, dub, True)))
    forced = _forced(codes, src.confident)
    made.append(("a code forced", audio_comparable(src.redecode(forced) if src.redecode else wav, forced, rate)))
    if src.other_seed is not None:
        other = src.other_seed
        made.append(("another seed's codes, honest waveform", audio_comparable(wav, other.arrays["codes"], rate)))
        for f in PARTIAL_FROM:
            spliced, spliced_wav = _splice_audio(h, other, f)
            if src.redecode:
                spliced_wav = src.redecode(spliced)
            made.append((f"re-generated from {int(f * 100)}%", audio_comparable(spliced_wav, spliced, rate)))
    return made
