"""Comparison levels, metrics, first divergence and agreement probabilities."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from harness.compare.agreement import group_figures
from harness.compare.levels import (
    LEVELS,
    Comparable,
    Thresholds,
    compare,
    first_divergence,
    float_metrics,
    level_rank,
    worst_level,
)
from harness.compare.validators import RULES
from harness.digests import digest_array, digest_json
from harness.outputs import Output
from tests.synthetic import RATE
from tests.synthetic import music as _music

music = functools.partial(_music, seconds=0.5)


def audio(wave: np.ndarray, codes: np.ndarray | None = None, rate: int = RATE) -> Comparable:
    arrays = {"waveform": np.asarray(wave, np.float32)}
    if codes is not None:
        arrays["codes"] = np.asarray(codes, np.int64)
    digests = {k: digest_array(v) for k, v in arrays.items()}
    digests["output"] = digests["waveform"]
    if codes is not None:
        digests["tokens"] = digests["codes"]
    name = "codes" if codes is not None else None
    return Comparable(arrays=arrays, digests=digests, discrete=name, steps=name, sampling_rate=rate)


def text(token_ids: np.ndarray, response: dict) -> Comparable:
    ids = np.asarray(token_ids, np.int64)
    d = {"token_ids": digest_array(ids), "response": digest_json(response)}
    d.update(output=d["response"], tokens=d["token_ids"])
    return Comparable(arrays={"token_ids": ids}, digests=d, discrete="token_ids", steps="token_ids")


def latents(steps: np.ndarray) -> Comparable:
    arr = np.asarray(steps, np.float32)
    return Comparable(arrays={"latents": arr}, digests={"latents": digest_array(arr)}, steps="latents")


CODES = np.arange(40, dtype=np.int64).reshape(10, 4)


def noisy(x: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    return (x + np.random.default_rng(seed).normal(0, std, x.shape)).astype(np.float32)


class Untouchable(dict):
    """A lazy array store that fails the test if anything is loaded."""

    def __getitem__(self, key):
        raise AssertionError(f"array {key!r} was loaded")


def test_levels_order_and_helpers():
    assert LEVELS == ("bitwise", "tokens", "tolerance", "perceptual", "divergent")
    assert [level_rank(lv) for lv in LEVELS] == [0, 1, 2, 3, 4]
    assert worst_level(["tokens", "bitwise", "tolerance"]) == "tolerance"
    assert worst_level(["bitwise"]) == "bitwise"
    assert worst_level([]) is None
    with pytest.raises(ValueError):
        level_rank("close")


def test_threshold_defaults_and_validation():
    t = Thresholds()
    assert (t.rel_l2_max, t.cosine_min, t.hamming_max, t.max_length_mismatch, t.fingerprint_bits) == (
        0.10,
        0.99,
        8,
        0.01,
        64,
    )
    with pytest.raises(ValidationError):
        Thresholds(rel_l2=0.2)
    with pytest.raises(ValidationError):
        Thresholds(cosine_min=2.0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 2000), st.integers(1, 2), st.integers(0, 1000))
def test_self_comparison_is_bitwise(samples, channels, seed):
    x = np.random.default_rng(seed).normal(size=(samples, channels)).astype(np.float32)
    a, b = audio(x), audio(x.copy())
    assert compare(a, a).level == "bitwise"
    assert compare(a, b).level == "bitwise"


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 1000), st.sampled_from([0.0, 1e-7, 1e-3, 0.03, 0.3, 3.0]), st.booleans(), st.booleans())
def test_level_is_symmetric(seed, std, same_codes, cut):
    x = music(seed)
    y = noisy(x, std, seed + 1) if std else -x
    if cut:
        y = y[: int(len(y) * 0.98)]
    a = audio(x, CODES)
    b = audio(y, CODES if same_codes else CODES + 1)
    ab, ba = compare(a, b), compare(b, a)
    assert ab.level == ba.level
    assert ab.metrics.get("rel_l2") == ba.metrics.get("rel_l2")
    assert ab.metrics.get("hamming") == ba.metrics.get("hamming")
    assert (ab.metrics["length_a"], ab.metrics["length_b"]) == (ba.metrics["length_b"], ba.metrics["length_a"])


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 1000))
def test_tiny_noise_is_tolerance_or_tokens(seed):
    x = music(seed)
    y = noisy(x, 1e-7, seed + 1)
    assert not np.array_equal(x, y)
    c = compare(audio(x), audio(y))
    assert c.level == "tolerance"
    assert c.metrics["rel_l2"] < 1e-5 and c.metrics["cosine"] > 0.999999
    assert c.metrics["snr_db"] > 100 and 0 < c.metrics["max_abs"] < 1e-6
    assert compare(audio(x, CODES), audio(y, CODES)).level == "tokens"


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 1000))
def test_different_signal_is_divergent(seed):
    c = compare(audio(music(seed), CODES), audio(music(seed + 5000), CODES + 1))
    assert c.level == "divergent"
    assert c.metrics["hamming"] > 8
    assert c.first_divergence == 0 and c.steps_total == 10


def test_scaled_audio_is_perceptual():
    x = music(1)
    c = compare(audio(x), audio(0.5 * x))
    assert c.level == "perceptual"
    assert c.metrics["rel_l2"] == pytest.approx(0.5, rel=1e-6)
    assert c.metrics["cosine"] == pytest.approx(1.0, abs=1e-9)
    assert c.metrics["snr_db"] == pytest.approx(20 * np.log10(2), rel=1e-6)
    assert c.metrics["hamming"] == 0


def test_length_mismatch_limits_tolerance():
    x = music(2, seconds=1.0)
    short = compare(audio(x), audio(x[: len(x) - 80]))  # 0.5%: common prefix is identical
    assert short.level == "tolerance"
    assert short.metrics["rel_l2"] == 0.0 and short.metrics["snr_db"] == 200.0
    assert (short.metrics["length_a"], short.metrics["length_b"]) == (16000, 15920)
    long_cut = compare(audio(x), audio(x[: len(x) // 2]))
    assert long_cut.level in ("perceptual", "divergent")
    assert compare(audio(x), audio(x[:0])).level == "divergent"


def test_json_safe_metrics_for_degenerate_audio():
    zeros, negzeros = np.zeros((100, 1), np.float32), np.full((100, 1), -0.0, np.float32)
    c = compare(audio(zeros), audio(negzeros))  # bytes differ, values equal
    assert c.level == "tolerance"
    assert c.metrics["cosine"] == 1.0 and c.metrics["snr_db"] == 200.0 and c.metrics["rel_l2"] == 0.0
    nan = compare(audio(np.full((100, 1), np.nan, np.float32)), audio(zeros))
    assert nan.metrics["rel_l2"] is None and nan.level != "tolerance"
    silent_vs_sound = compare(audio(zeros), audio(music(0)[:100]))
    assert silent_vs_sound.metrics["cosine"] == 0.0
    for comp in (c, nan, silent_vs_sound):
        json.dumps(comp.model_dump(), allow_nan=False)
    assert float_metrics(np.zeros((5, 2)), np.zeros((5, 3)))["rel_l2"] is None


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 50), st.data())
def test_first_divergence_is_exact(frames, data):
    k = data.draw(st.integers(0, frames - 1))
    codes = np.arange(frames * 4, dtype=np.int64).reshape(frames, 4)
    other = codes.copy()
    other[k:, data.draw(st.integers(0, 3))] += 1
    fd, total = first_divergence(audio(music(0), codes), audio(music(0), other))
    assert (fd, total) == (k, frames)
    lat = np.random.default_rng(k).normal(size=(frames, 3, 2)).astype(np.float32)
    lat2 = lat.copy()
    lat2[k, 1, 1] = np.nextafter(lat2[k, 1, 1], np.float32(np.inf))
    comp = compare(latents(lat), latents(lat2))
    assert comp.first_divergence == k and comp.steps_total == frames
    assert comp.level == "tolerance"


def test_first_divergence_prefix_and_equal():
    codes = CODES
    assert first_divergence(audio(music(0), codes), audio(music(0), codes[:6])) == (6, 10)
    assert first_divergence(audio(music(0), codes), audio(music(1), codes)) == (None, 10)
    assert first_divergence(audio(music(0)), audio(music(1))) == (None, None)


def test_text_levels_and_step_axis():
    ids = np.array([[5, 6, 7, 8, -1], [1, 2, 3, -1, -1]])
    resp = {"choices": [{"text": "a"}]}
    assert compare(text(ids, resp), text(ids.copy(), dict(resp))).level == "bitwise"
    tok = compare(text(ids, resp), text(ids, {"choices": [{"text": "a "}]}))
    assert tok.level == "tokens" and tok.first_divergence is None and tok.metrics == {}
    other = ids.copy()
    other[1, 3] = 9  # token_ids are (choices, steps): step 3 of choice 1
    div = compare(text(ids, resp), text(other, {"choices": [{"text": "b"}]}))
    assert div.level == "divergent"
    assert (div.first_divergence, div.steps_total) == (3, 5)


def test_from_output_matches_digests():
    wave = music(3)
    out = Output(
        kind="audio", arrays={"waveform": wave, "codes": CODES}, sampling_rate=RATE, discrete="codes", steps="codes"
    )
    c = Comparable.from_output(out)
    assert c.digests["output"] == digest_array(wave) and c.digests["tokens"] == digest_array(CODES)
    assert (c.discrete, c.steps, c.sampling_rate) == ("codes", "codes", RATE)
    assert compare(c, audio(wave, CODES)).level == "bitwise"


def test_digests_first_no_array_loaded():
    a = audio(music(0), CODES)
    lazy = Comparable(
        arrays=Untouchable(a.arrays), digests=dict(a.digests), discrete="codes", steps="codes", sampling_rate=RATE
    )
    assert compare(lazy, a).level == "bitwise"
    b = audio(music(1), CODES)  # same codes, other audio
    lazy_b = Comparable(
        arrays=Untouchable(b.arrays), digests=dict(b.digests), discrete="codes", steps="codes", sampling_rate=RATE
    )
    assert RULES["tokens"](a, lazy_b) is True  # decided on digests alone
    with pytest.raises(AssertionError, match="was loaded"):
        compare(a, lazy_b)  # a full comparison does measure the floats


def test_rules_are_what_each_validator_decides():
    x = music(4)
    a, b, c = audio(x, CODES), audio(noisy(x, 1e-7), CODES + 1), audio(music(99), CODES + 2)
    assert RULES["bitwise"](a, a) and not RULES["bitwise"](a, b)
    assert not RULES["tokens"](a, b) and not RULES["composite"](a, b)
    assert RULES["tolerance"](a, b) and RULES["perceptual"](a, b)
    assert not RULES["perceptual"](a, c)
    # equal codes, the waveform replaced by other audio: "tokens" accepts, the waveform rules do not
    swapped = audio(music(98), CODES)
    assert RULES["tokens"](a, audio(x, CODES)) and RULES["tokens"](a, swapped)
    for name in ("tolerance", "composite", "bitwise", "result_hash"):
        assert not RULES[name](a, swapped), name
    assert RULES["composite"](a, audio(noisy(x, 1e-9), CODES))


def test_equal_codes_with_a_far_waveform_is_a_finding():
    x = music(5)
    swapped = compare(audio(x, CODES), audio(music(97), CODES))
    assert swapped.level == "tokens" and swapped.finding == "waveform_far_tokens_equal"
    honest = compare(audio(x, CODES), audio(noisy(x, 1e-9), CODES))
    assert honest.level == "tokens" and honest.finding is None


def test_equal_response_with_other_token_ids_is_not_bitwise():
    ids = np.array([[5, 6, 7, 8]], np.int64)
    other = ids.copy()
    other[0, 2] = 70  # another byte token that decodes to the same text
    resp = {"choices": [{"text": "same"}]}
    c = compare(text(ids, resp), text(other, dict(resp)))
    assert c.level == "divergent" and c.finding == "tokens_differ_output_equal" and c.first_divergence == 2
    assert RULES["result_hash"](text(ids, resp), text(other, resp))  # the network's rule accepts it
    assert not RULES["bitwise"](text(ids, resp), text(other, resp))


def _three_kinds():
    x = music(7)
    return audio(x), audio(music(8)), audio(music(9)), x


def _bitwise(a, b):
    return RULES["bitwise"](a, b)


def _fig(outputs, rule=_bitwise, **kw):
    g = group_figures(outputs, rule, **kw)
    return {k: getattr(g, k) for k in ("p3of3", "p2of3", "p_aborted", "invalidated", "triples", "pairs_agree")}


def test_agreement_known_mixes():
    A, B, C, _ = _three_kinds()
    assert _fig([A, A, A, A]) == {
        "p3of3": 1.0,
        "p2of3": 1.0,
        "p_aborted": 0.0,
        "invalidated": 0.0,
        "triples": 4,
        "pairs_agree": 1.0,
    }
    assert _fig([A, B, C]) == {
        "p3of3": 0.0,
        "p2of3": 0.0,
        "p_aborted": 1.0,
        "invalidated": 0.0,
        "triples": 1,
        "pairs_agree": 0.0,
    }
    r = _fig([A, A, B])  # accepted, the odd node invalidated: 1 of 3 executions
    assert (r["p3of3"], r["p2of3"], r["p_aborted"], r["triples"]) == (0.0, 1.0, 0.0, 1)
    assert r["invalidated"] == pytest.approx(1 / 3) and r["pairs_agree"] == pytest.approx(1 / 3)
    r = _fig([A, A, A, B])  # AAA once, AAB three times
    assert (r["p3of3"], r["p2of3"]) == (0.25, 1.0) and r["invalidated"] == pytest.approx(0.75 / 3)
    r = _fig([A, A, B, C])  # AAB, AAC accepted; ABC, ABC aborted
    assert (r["p3of3"], r["p2of3"], r["p_aborted"]) == (0.0, 0.5, 0.5)


def test_relay_order_decides_a_non_transitive_group():
    from harness.compare.agreement import relay_invalidated

    assert relay_invalidated(True, True, True) == ()
    assert relay_invalidated(True, False, True) == (2,)  # 2 agrees with 1, still invalidated
    assert relay_invalidated(False, True, False) == (1,)
    assert relay_invalidated(False, False, True) == (0,)
    assert relay_invalidated(False, False, False) == ()
    A, B, C, _ = _three_kinds()
    chain = {frozenset((id(A), id(B))), frozenset((id(B), id(C)))}  # A~B, B~C, not A~C
    g = group_figures([A, B, C], lambda a, b: frozenset((id(a), id(b))) in chain)
    # over the 6 orders: the middle node B is never invalidated, A and C each in 2 of 6
    assert g.p2of3 == 1.0 and g.invalidated == pytest.approx((2 / 6 + 2 / 6) / 3)


def test_agreement_with_tolerance_rule_and_few_outputs():
    A, B, _, x = _three_kinds()
    A2 = audio(noisy(x, 1e-7))
    assert _fig([A, A2, A], lambda a, b: RULES["tolerance"](a, b))["p3of3"] == 1.0
    assert _fig([A, A2, A])["p3of3"] == 0.0
    one = _fig([A])
    assert one["p3of3"] is None and one["triples"] == 0 and one["pairs_agree"] is None
    two = _fig([A, B])
    assert two["p3of3"] is None and two["triples"] == 0 and two["pairs_agree"] == 0.0


def test_agreement_sampling_and_rule_calls():
    A, B, _, _ = _three_kinds()
    calls = []

    def counting(a, b):
        calls.append(1)
        return _bitwise(a, b)

    outputs = [A] * 70 + [B] * 30  # two content classes: counted exactly, whatever n is
    r = _fig(outputs, counting, max_triples=5000, seed=1)
    assert r["triples"] == 161700  # C(100, 3), all of them, by class multiplicities
    assert len(calls) <= 1  # one call per distinct pair of contents
    exact3 = (70 * 69 * 68 + 30 * 29 * 28) / (100 * 99 * 98)
    assert r["p3of3"] == pytest.approx(exact3, rel=1e-9)
    assert r["p2of3"] == 1.0  # with two kinds, some two of three always match


def test_agreement_samples_when_contents_are_many():
    A, _, _, _ = _three_kinds()
    many = [Comparable(arrays={}, digests={"output": f"d{i}"}) for i in range(98)] + [A, A]
    r = _fig(many, max_triples=5000, seed=1)
    assert r["triples"] == 5000  # 100 classes: 10^6 class triples > 6 * max_triples, so sampled
    assert r["p3of3"] == 0.0 and r["p2of3"] == pytest.approx(98 / 161700 * 1, abs=0.01)
    assert _fig(many, max_triples=5000, seed=1) == r
