"""Audio validation rules and cheat generators: what each rule accepts and rejects."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.compare.levels import Comparable, Thresholds, float_metrics
from harness.compare.validators import (
    VALIDATORS,
    add_noise,
    bitwise,
    composite,
    error_rates,
    lower_precision,
    perceptual,
    time_shift,
    tokens,
    tolerance,
    truncate,
    with_waveform,
)
from harness.digests import digest_array
from tests.synthetic import RATE
from tests.synthetic import music as _music

CODES = np.arange(40, dtype=np.int64).reshape(10, 4)


music = functools.partial(_music, seconds=0.5)


def audio(wave: np.ndarray, codes: np.ndarray | None = CODES) -> Comparable:
    arrays = {"waveform": np.asarray(wave, np.float32)}
    if codes is not None:
        arrays["codes"] = codes
    digests = {k: digest_array(v) for k, v in arrays.items()}
    digests["output"] = digests["waveform"]
    name = None
    if codes is not None:
        digests["tokens"], name = digests["codes"], "codes"
    return Comparable(arrays=arrays, digests=digests, discrete=name, steps=name, sampling_rate=RATE)


def honest_twin(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """Another node's output: same codes, float noise at the 1e-7 level."""
    return (x + np.random.default_rng(seed).normal(0, 1e-7, x.shape)).astype(np.float32)


def test_registry():
    assert list(VALIDATORS) == ["bitwise", "tokens", "tolerance", "perceptual", "composite"]


def test_honest_pair_verdicts():
    x = music(0)
    ref, cand = audio(x), audio(honest_twin(x))
    assert not bitwise(ref, cand, None)
    assert tokens(ref, cand, None)
    assert composite(ref, cand, None)  # a 1e-7 float wobble with equal codes is honest
    assert tolerance(ref, cand, None)
    assert perceptual(ref, cand, None)
    assert all(fn(ref, audio(x.copy()), Thresholds()) for fn in VALIDATORS.values())


def test_other_signal_rejected_by_all():
    ref, cand = audio(music(0)), audio(music(1), CODES + 1)
    assert not any(fn(ref, cand, Thresholds()) for fn in VALIDATORS.values())


def test_missing_arrays_reject():
    ref = audio(music(0))
    no_codes = audio(music(0), codes=None)
    assert not tokens(ref, no_codes) and not tokens(no_codes, no_codes)
    text = Comparable(arrays={}, digests={"output": "x"})
    assert not tolerance(ref, text) and not perceptual(ref, text) and not bitwise(ref, text)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from([0.0, 10.0, 30.0]), st.integers(0, 100))
def test_add_noise_hits_snr_and_is_seeded(snr, seed):
    x = music(seed)
    y = add_noise(x, snr, seed=seed)
    assert y.dtype == np.float32 and y.shape == x.shape
    measured = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
    assert measured == pytest.approx(snr, abs=0.3)
    assert np.array_equal(y, add_noise(x, snr, seed=seed))
    assert not np.array_equal(y, add_noise(x, snr, seed=seed + 1))


def test_add_noise_on_silence_uses_full_scale():
    y = add_noise(np.zeros((4000, 1), np.float32), 20.0, seed=0)
    assert np.std(y) == pytest.approx(0.1, rel=0.05)


def test_time_shift():
    x = np.arange(1, 11, dtype=np.float32)[:, None]
    assert time_shift(x, 3)[:, 0].tolist() == [0, 0, 0, 1, 2, 3, 4, 5, 6, 7]
    assert time_shift(x, -2)[:, 0].tolist() == [3, 4, 5, 6, 7, 8, 9, 10, 0, 0]
    assert np.array_equal(time_shift(x, 0), x)
    assert not time_shift(x, 10).any() and not time_shift(x, -50).any()


def test_truncate():
    x = np.arange(1, 101, dtype=np.float32)[:, None]
    assert truncate(x, 0.1).shape == (90, 1)
    kept = truncate(x, 0.25, keep_length=True)
    assert kept.shape == (100, 1) and not kept[75:].any() and np.array_equal(kept[:75], x[:75])
    assert truncate(x, 1.0).shape == (0, 1) and np.array_equal(truncate(x, 0.0), x)
    with pytest.raises(ValueError):
        truncate(x, 1.5)


def test_lower_precision():
    x = music(2)
    f16 = lower_precision(x, "float16")
    assert np.array_equal(f16, x.astype(np.float16).astype(np.float32))
    bf = lower_precision(x, "bfloat16")
    assert bf.dtype == np.float32 and not (bf.view(np.uint32) & 0xFFFF).any()
    assert np.max(np.abs(bf - x) / np.maximum(np.abs(x), 1e-30)) <= 2.0**-8
    ties = np.array([1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8), 2.5], np.float32)
    assert lower_precision(ties, "bfloat16")[:, 0].tolist() == [1.0, 1 + 2.0**-6, -1.0, 2.5]
    special = lower_precision(np.array([np.nan, np.inf, -np.inf], np.float32), "bfloat16")[:, 0]
    assert np.isnan(special[0]) and special[1] == np.inf and special[2] == -np.inf
    with pytest.raises(ValueError):
        lower_precision(x, "int8")


def test_with_waveform_drops_codes_unless_asked():
    honest = audio(music(3))
    cheat = with_waveform(honest, add_noise(music(3), 30.0))
    assert "codes" not in cheat.arrays and cheat.discrete is None
    assert cheat.digests["output"] == digest_array(cheat.arrays["waveform"])
    kept = with_waveform(honest, music(3), keep_codes=True)
    assert kept.discrete == "codes" and tokens(honest, kept) and bitwise(honest, kept)


def test_cheat_verdicts():
    x = music(4)
    ref = audio(x)
    loud_noise = with_waveform(ref, add_noise(x, 0.0))
    assert not tolerance(ref, loud_noise)
    pure_noise = with_waveform(ref, add_noise(np.zeros_like(x), 20 * np.log10(1 / np.std(x)), seed=1))
    assert not tolerance(ref, pure_noise) and not perceptual(ref, pure_noise)
    mild_noise = with_waveform(ref, add_noise(x, 10.0))
    assert not tolerance(ref, mild_noise)  # rel-L2 ~0.32 > 0.10
    assert float_metrics(x, mild_noise.arrays["waveform"])["rel_l2"] == pytest.approx(0.32, abs=0.03)
    shifted = with_waveform(ref, time_shift(x, 40))
    assert not tolerance(ref, shifted)
    cut = with_waveform(ref, truncate(x, 0.05))
    assert not tolerance(ref, cut)  # common prefix identical, but 5% shorter
    assert tolerance(ref, cut, Thresholds(max_length_mismatch=0.06))
    f16 = with_waveform(ref, lower_precision(x))
    assert tolerance(ref, f16) and perceptual(ref, f16) and not bitwise(ref, f16)


def test_error_rates_table():
    honest, cheats = [], []
    for seed in range(4):
        x = music(seed)
        ref = audio(x)
        honest.append((ref, audio(honest_twin(x, seed))))
        cheats.append((ref, with_waveform(ref, add_noise(x, 0.0, seed=seed))))
        cheats.append((ref, audio(music(seed + 100), CODES + 1)))  # another seed: other codes too
    df = error_rates(honest, cheats)
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["validator", "false_reject_rate", "false_accept_rate", "honest_pairs", "cheat_pairs"]
    rates = df.set_index("validator")
    assert rates.loc["bitwise", "false_reject_rate"] == 1.0
    for name in ("tokens", "tolerance", "perceptual", "composite"):
        assert rates.loc[name, "false_reject_rate"] == 0.0
    for name in ("bitwise", "tokens", "tolerance", "composite"):
        assert rates.loc[name, "false_accept_rate"] == 0.0
    # the fingerprint hears 0 dB noise over the same music as the same music, sometimes
    accepted = sum(perceptual(ref, cand, Thresholds()) for ref, cand in cheats)
    assert rates.loc["perceptual", "false_accept_rate"] == accepted / 8
    assert accepted <= 2
    assert (rates["honest_pairs"] == 4).all() and (rates["cheat_pairs"] == 8).all()
    only = error_rates(honest, [], {"tolerance": tolerance})
    assert len(only) == 1 and np.isnan(only.loc[0, "false_accept_rate"])


def test_composite_rejects_honest_codes_with_an_edited_waveform():
    x = music(6)
    ref = audio(x)
    for edited in (add_noise(x, 30.0, seed=1), lower_precision(x, "bfloat16"), music(60)):
        cheat = with_waveform(ref, edited, keep_codes=True)
        assert tokens(ref, cheat) and not composite(ref, cheat)
    assert not composite(ref, audio(honest_twin(x), CODES + 1))  # other codes, honest-looking audio
    # the calibrated bound decides: a wobble just inside passes, one just outside does not
    thr = Thresholds(waveform_max_abs=1e-6, waveform_rel_l2=1.0)
    inside = audio((x + 0.9e-6).astype(np.float32))
    outside = audio((x + 1.2e-6).astype(np.float32))
    assert composite(ref, inside, thr) and not composite(ref, outside, thr)
