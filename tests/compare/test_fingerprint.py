"""The audio fingerprint: defined on degenerate input, stable under float noise, and
different for different sounds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.compare.fingerprint import audio_fingerprint, band_energies, hamming, to_hex, to_int
from tests.synthetic import RATE, music


def test_shape_and_type():
    fp = audio_fingerprint(music(0), RATE)
    assert fp.dtype == np.bool_ and fp.shape == (64,)
    assert 0 < fp.sum() < 64  # real audio sets some bits, not all
    assert audio_fingerprint(music(0), RATE, bits=128).shape == (128,)
    assert audio_fingerprint(music(0), RATE, bits=32).shape == (32,)


@pytest.mark.parametrize("bits", [0, -64])
def test_bad_sizes_raise(bits):
    with pytest.raises(ValueError):
        audio_fingerprint(music(0), RATE, bits=bits)


def test_bad_rate_raises():
    with pytest.raises(ValueError):
        audio_fingerprint(music(0), 0)


@pytest.mark.parametrize(
    "wave",
    [
        np.zeros((0, 1), np.float32),
        np.zeros((0, 2), np.float32),
        np.zeros((1, 1), np.float32),
        np.full((7, 2), 0.3, np.float32),
        np.zeros((RATE, 1), np.float32),
        np.ones((RATE, 1), np.float32),
        np.full((100, 1), np.nan, np.float32),
        np.array([np.inf, -np.inf, 0.5], np.float32),
        np.zeros((100, 0), np.float32),
    ],
)
def test_degenerate_audio_is_defined(wave):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fp1 = audio_fingerprint(wave, RATE)
        fp2 = audio_fingerprint(wave.copy(), RATE)
    assert fp1.shape == (64,) and fp1.dtype == np.bool_
    assert np.array_equal(fp1, fp2)
    assert np.isfinite(band_energies(wave, RATE, 8, 9)).all()


def test_silence_and_tiny_noise_agree():
    silent = np.zeros((RATE, 1), np.float32)
    noisy = np.random.default_rng(1).normal(0, 1e-6, silent.shape).astype(np.float32)
    assert not audio_fingerprint(silent, RATE).any()
    assert hamming(audio_fingerprint(silent, RATE), audio_fingerprint(noisy, RATE)) == 0


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_hamming_self_is_zero(seed):
    fp = audio_fingerprint(music(seed), RATE)
    assert hamming(fp, fp) == 0
    assert hamming(fp, audio_fingerprint(music(seed).copy(), RATE)) == 0


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_stable_under_tiny_noise(seed):
    x = music(seed)
    noise = np.random.default_rng(seed + 1).normal(0, 1e-6, x.shape).astype(np.float32)
    assert hamming(audio_fingerprint(x, RATE), audio_fingerprint(x + noise, RATE)) <= 1


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_stable_under_float16_rounding(seed):
    """Rounding noise (~ -66 dB) lives in quiet cells; the -50 dB floor hides it."""
    x = music(seed)
    assert hamming(audio_fingerprint(x, RATE), audio_fingerprint(x.astype(np.float16).astype(np.float32), RATE)) <= 2


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_different_signals_differ(seed):
    a, b = audio_fingerprint(music(seed), RATE), audio_fingerprint(music(seed + 10_001), RATE)
    assert hamming(a, b) > 8


def test_white_noise_is_stable_and_distinct():
    g = np.random.default_rng(3)
    w1, w2 = g.normal(size=(RATE, 1)).astype(np.float32), g.normal(size=(RATE, 1)).astype(np.float32)
    f1 = audio_fingerprint(w1, RATE)
    assert hamming(f1, audio_fingerprint(w1 + np.float32(1e-6), RATE)) == 0
    assert hamming(f1, audio_fingerprint(w2, RATE)) > 8


def test_tones_of_different_pitch_differ():
    t = np.arange(RATE) / RATE
    a = audio_fingerprint(np.sin(2 * np.pi * 440 * t), RATE)
    b = audio_fingerprint(np.sin(2 * np.pi * 1760 * t), RATE)
    assert hamming(a, b) > 8


def test_scale_invariant_and_mono_mix():
    x = music(5)
    fp = audio_fingerprint(x, RATE)
    assert hamming(fp, audio_fingerprint(0.5 * x, RATE)) == 0
    assert np.array_equal(fp, audio_fingerprint(music(5, channels=2), RATE))
    assert np.array_equal(fp, audio_fingerprint(x[:, 0], RATE))


def test_int_and_hex():
    fp = np.zeros(64, bool)
    fp[0] = fp[63] = True
    assert to_int(fp) == (1 << 63) | 1
    assert to_hex(fp) == "8000000000000001"
    assert to_hex(np.zeros(64, bool)) == "0" * 16
    assert hamming(to_int(fp), 0) == 2
    assert hamming(fp, np.zeros(64, bool)) == 2


def test_hamming_size_mismatch_raises():
    with pytest.raises(ValueError):
        hamming(np.zeros(64, bool), np.zeros(32, bool))
