"""harness calibrate's building blocks, without a model: which source separates two executions,
the split by task, Wilson rates, the audio cheats against the composite rule, the study checks
(another model mixed in, other weights) and the scope's environment at use."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.analysis.calibration import (
    CalibrationInputError,
    ConfigKey,
    Execution,
    HonestPair,
    held_out,
    honest_pairs,
    separating,
    waveform_spread,
    wilson,
)
from harness.compare.cheats import CheatSources, audio_cheats, audio_comparable
from harness.compare.levels import Thresholds
from harness.compare.validators import composite, composite_score
from harness.spec.calibration import Calibration, Entry, Facts, Rate, Scope, resolve
from harness.store.records import Axes, Node, Record
from harness.workflows.calibrate import calibratable

F32 = ConfigKey("audio", "tiny:musicgen", "float32", None)


def _record(cell: str, node: str = "n0", **axes: object) -> Record:
    base = {"dtype": "float32", "quantize_bits": None, "seed": 1, "device": "cpu"}
    return Record(
        cell_id=cell,
        spec_hash="s",
        config_id="c",
        task_name="t",
        kind="audio",
        model="tiny:musicgen",
        axes=Axes(**{**base, **axes}),
        status="ok",
        node=Node(key=node, hostname=node),
    )


def _execution(
    cell: str,
    source: int = 0,
    task: str = "t1",
    output: object = None,
    config: ConfigKey = F32,
    sampled: bool = True,
    weights: str | None = "w",
    node: str = "n0",
    kernel: str = "k",
    **axes: object,
) -> Execution:
    return Execution(
        record=_record(cell, node, **axes),
        output=output,  # type: ignore[arg-type]
        source=source,
        config=config,
        task=task,
        prompt="p",
        seed=1,
        sampled=sampled,
        new_tokens=16,
        weights=weights,
        kernel_class=kernel,
        gpus=(),
        libraries=frozenset(),
        doc={},
    )


@pytest.mark.parametrize(
    ("a", "b", "source"),
    [
        ({}, {"repeat": 1}, "repeat"),
        ({}, {"worker": 1}, "process"),
        ({}, {"worker": 1, "repeat": 1}, "process"),
        ({}, {"threads": 2}, "threads"),
        ({"isa": "native"}, {"isa": "avx2", "kernel_class": "k2"}, "isa"),
        ({}, {"batch_size": 2}, "batch"),
        ({}, {"load": "cold"}, "load"),
        ({}, {"device": "cuda:0"}, "device"),
        ({}, {"node": "n1"}, "node"),
        ({}, {"source": 1}, "machine"),
        ({}, {"source": 1, "threads": 2}, None),  # two things differ: no single source
        ({}, {"threads": 2, "isa": "avx2"}, None),
        ({}, {"threads": 2, "node": "n1"}, None),
        ({}, {"tf32": "on"}, None),  # not a comparison dimension
    ],
)
def test_the_one_source_that_separates_two_executions(a, b, source):
    def make(cell: str, spec: dict) -> Execution:
        spec = dict(spec)
        e = _execution(
            cell,
            source=spec.pop("source", 0),
            node=spec.pop("node", "n0"),
            kernel=spec.pop("kernel_class", "k"),
            **spec,
        )
        return e

    assert separating(make("a", a), make("b", b)) == source
    assert separating(make("b", b), make("a", a)) == source


def test_two_levels_with_the_same_kernels_are_no_isa_pair():
    a, b = _execution("a"), _execution("b", isa="avx2")  # both kernel class "k" (an AVX2-only CPU)
    assert separating(a, b) is None


def test_sampled_tasks_leave_batch_and_load_out_and_say_so():
    runs = [_execution("a"), _execution("b", batch_size=2), _execution("c", load="cold"), _execution("d", repeat=1)]
    pairs, notes = honest_pairs(runs)
    assert sorted(p.source for p in pairs[F32]) == ["repeat"]
    assert any(n.startswith("batch: 2 pair(s) left out") for n in notes)
    assert any(n.startswith("load: 2 pair(s) left out") for n in notes)
    greedy = [_execution("a", sampled=False), _execution("b", sampled=False, batch_size=2)]
    assert [p.source for p in honest_pairs(greedy)[0][F32]] == ["batch"]


def test_pairs_never_cross_tasks_or_configurations():
    bf16 = ConfigKey("audio", "tiny:musicgen", "bfloat16", None)
    runs = [_execution("a"), _execution("b", task="t2", repeat=1), _execution("c", config=bf16, repeat=1)]
    assert honest_pairs(runs)[0] == {}


@given(st.sets(st.text(min_size=1, max_size=8), min_size=2, max_size=40))
def test_the_split_is_by_task_deterministic_and_both_halves_hold_tasks(tasks):
    held = held_out(tasks)
    assert held <= tasks and held and tasks - held
    assert held_out(sorted(tasks, reverse=True)) == held  # the order given does not matter
    assert abs(len(held) - len(tasks - held)) <= 1


@settings(deadline=None)  # scipy loads on the first example
@given(st.integers(0, 500), st.integers(0, 500))
def test_wilson_interval_holds_the_rate(errors, extra):
    pairs = errors + extra
    r = wilson(errors, pairs)
    if pairs == 0:
        assert (r.low, r.high, r.pairs) == (0.0, 1.0, 0)
    else:
        assert r.low <= r.rate <= r.high and r.errors == errors and r.pairs == pairs
        assert r.high < 1.0 or errors == pairs


def test_zero_of_300_is_what_proves_one_percent():
    assert wilson(0, 300).high < 0.013 and wilson(0, 30).high > 0.1


def _audio(seed: int, frames: int = 12, wobble: float = 0.0) -> object:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(frames, 4))
    wav = rng.uniform(-0.5, 0.5, size=(frames * 64, 1)).astype(np.float32)
    return audio_comparable(wav + np.float32(wobble), codes, 32000)


def test_every_audio_cheat_is_rejected_at_the_honest_bounds_and_honest_wobble_is_not():
    ref, honest = _audio(1), _audio(1, wobble=1e-6)
    spread = float(np.max(np.abs(ref.arrays["waveform"] - honest.arrays["waveform"])))
    thr = Thresholds(
        waveform_max_abs=2 * spread,
        waveform_rel_l2=2 * composite_score(ref, honest, Thresholds(waveform_max_abs=1, waveform_rel_l2=1)),
    )
    assert composite(ref, honest, thr)
    src = CheatSources(
        honest=honest,
        other_seed=_audio(2),
        other_prompt=_audio(3),
        lower={"bfloat16": _audio(4)},
        spread=spread,
        noise_seed=5,
    )
    made = audio_cheats(src)
    names = [n for n, _ in made]
    assert len(names) == len(set(names)) >= 15
    assert {"another seed", "another prompt", "bfloat16 passed off", "a code forced", "re-generated from 50%"} <= set(
        names
    )
    assert any(n.startswith("overdub 3x") for n in names) and any(n.startswith("truncated") for n in names)
    accepted = [n for n, c in made if composite(ref, c, thr)]
    assert accepted == []


def test_a_swap_with_a_decoder_re_decodes_the_audio():
    ref = _audio(1)
    calls = []

    def redecode(codes: np.ndarray) -> np.ndarray:
        calls.append(codes.shape)
        return np.zeros((codes.shape[0] * 64, 1), np.float32)

    made = dict(audio_cheats(CheatSources(honest=ref, other_seed=_audio(2), redecode=redecode, confident=(3, 1, 7))))
    assert int(made["a code forced"].arrays["codes"][3, 1]) == 7
    assert not np.any(made["a code forced"].arrays["waveform"])  # the decoder's audio, not the honest one
    assert len(calls) == 4  # truncation, forced code, two partial re-generations


def test_waveform_spread_reads_only_pairs_with_equal_codes():
    a, b, other = _audio(1), _audio(1, wobble=1e-4), _audio(2)
    pairs = [HonestPair("threads", "t", _execution("a", output=a), _execution("b", output=b))]
    pairs.append(HonestPair("isa", "t", _execution("a", output=a), _execution("c", output=other)))
    max_abs, rel = waveform_spread(pairs)
    assert max_abs == pytest.approx(1e-4, rel=1e-2) and rel > 0


def test_another_model_mixed_in_is_refused_with_one_line():
    gpt = ConfigKey("gpt", "tiny:gpt2", "float32", None)
    other = ConfigKey("audio", "facebook/musicgen-small", "float32", None)
    runs = [_execution("a"), _execution("b", source=1, config=other)]
    with pytest.raises(CalibrationInputError, match=r"^b: holds audio facebook/musicgen-small, another model"):
        calibratable(runs, "composite", ["a", "b"])
    runs = [_execution("a"), _execution("b", source=1, config=gpt)]
    with pytest.raises(CalibrationInputError, match=r"^b: holds gpt tiny:gpt2, another model or kind"):
        calibratable(runs, "composite", ["a", "b"])
    with pytest.raises(CalibrationInputError, match="2 different weights"):
        calibratable([_execution("a"), _execution("b", source=1, weights="v")], "composite", ["a", "b"])
    kept, notes = calibratable([_execution("a"), _execution("b", config=gpt)], "composite", ["a"])
    assert len(kept) == 1 and "gpt: left out" in notes[0] and "result_hash" in notes[0]
    with pytest.raises(CalibrationInputError, match="nothing to calibrate"):
        calibratable([_execution("b", config=gpt)], "composite", ["a"])


def _entry(**scope: object) -> Calibration:
    sc = Scope(
        kind="audio",
        model="m",
        dtype="float32",
        new_tokens=(16, 16),
        sources=["threads", "machine"],
        kernel_classes=["k"],
        harness_version="0",
        **scope,
    )
    rate = Rate(rate=0, low=0, high=0.1, errors=0, pairs=30)
    return Calibration(
        made_by="t",
        entries=[Entry(scope=sc, waveform_max_abs=1, waveform_rel_l2=1, false_reject=rate, false_accept=rate)],
    ).sealed()


def test_an_execution_outside_the_environment_is_not_ready_naming_it():
    facts = SimpleNamespace()
    cal = _entry(gpus=[], libraries={"torch": ["2.13.0+cpu"]})
    ok = Facts(
        "audio", "m", "float32", None, kernel_classes=frozenset({"k"}), libraries=frozenset({("torch", "2.13.0+cpu")})
    )
    assert resolve(cal, ok)[0] is not None
    gpu = Facts("audio", "m", "float32", None, gpus=frozenset({"NVIDIA H100, driver 550, CUDA 12.4"}))
    assert (
        resolve(cal, gpu)[1]
        == "GPU NVIDIA H100, driver 550, CUDA 12.4 is outside the calibration (calibrated: CPU only)"
    )
    torch = Facts("audio", "m", "float32", None, libraries=frozenset({("torch", "2.14.0")}))
    assert resolve(cal, torch)[1] == "torch 2.14.0 is outside the calibration (calibrated: torch 2.13.0+cpu)"
    old = _entry()  # a version-2 scope recorded no environment: nothing to check
    assert resolve(old, gpu)[0] is not None and facts is not None


def test_a_version_two_scope_keeps_its_digest():
    old = _entry()
    doc = old.model_dump(mode="json")
    assert "gpus" in doc["entries"][0]["scope"] and old.digest == old.content_digest()
    for name in ("gpus", "libraries"):
        doc["entries"][0]["scope"].pop(name)
    assert Calibration.model_validate(doc).content_digest() == old.digest


def test_a_version_one_calibration_still_reads():
    """Ported from the retired replay study's tests: the format's older versions keep reading."""
    from harness.digests import digest_json
    from harness.spec.calibration import parse_calibration

    entry = {
        "scope": {
            "kind": "audio",
            "model": "tiny:musicgen",
            "weights_sha256": None,
            "dtype": "float32",
            "quantize_bits": None,
            "new_tokens": [64, 64],
            "sources": ["repeat"],
            "kernel_classes": ["k"],
            "harness_version": "0.1.0",
        },
        "waveform_max_abs": 1e-6,
        "waveform_rel_l2": 1e-6,
        "notes": [],
        "false_reject": {"rate": 0.0, "low": 0.0, "high": 0.1, "errors": 0, "pairs": 10},
        "false_accept": {"rate": 0.0, "low": 0.0, "high": 0.1, "errors": 0, "pairs": 10},
    }
    doc = {"schema_version": 1, "rule": "composite", "made_by": "old", "entries": [entry]}
    doc["digest"] = digest_json(doc)
    cal = parse_calibration(doc, "old.json")
    assert cal.entries[0].replay_margin is None and cal.schema_version == 1 and cal.entries[0].scope.gpus is None


def test_det_points_and_replay_scores_scale_every_bound_together():
    """Ported from the retired replay study: a score <= t is accepted at threshold scale t."""
    import math

    from harness.compare.replay import ReplayDecision
    from harness.report.calibration import det_curve
    from harness.workflows.calibrate_replay import _score

    def decision(gap, max_abs=0.0, rel=0.0, accepted=True, lengths=(10, 10)):
        waveform = {"max_abs": max_abs, "rel_l2": rel, "length_a": lengths[0], "length_b": lengths[1]}
        return ReplayDecision(accepted=accepted, reason="", max_gap=gap, waveform=waveform)

    thr = Thresholds(replay_margin=0.1, waveform_max_abs=1e-3, waveform_rel_l2=1e-3)
    assert _score(decision(0.05), thr) == pytest.approx(0.5)
    assert _score(decision(0.0, max_abs=2e-3), thr) == pytest.approx(2.0)
    assert _score(decision(None), thr) is None  # an impossible token
    assert _score(decision(0.0, lengths=(10, 9)), thr) is None
    assert _score(ReplayDecision(accepted=None, reason="not replayable"), thr) is None
    det = det_curve([0.2, 0.5, 3.0], [0.8, None, 40.0])
    i = det["threshold"].index(1.0)
    assert det["frr"][i] == pytest.approx(1 / 3) and det["far"][i] == pytest.approx(1 / 3)
    assert det["operating"] == [pytest.approx(1 / 3), pytest.approx(1 / 3)]
    assert not math.isinf(max(det["threshold"]))


def test_a_cpu_execution_on_a_gpu_host_is_in_a_cpu_calibration():
    # the scope a calibration records (analysis.calibration.executions) and the facts a run is
    # checked with (analysis.run.config_facts) come from one place: a CPU cell on a host whose
    # fingerprint names a GPU used to be checked as that GPU, and refused by a CPU-only scope
    from harness.analysis.run import config_facts, record_scope

    env = {
        "gpu_names": ["NVIDIA H100"],
        "driver": "550",
        "cuda_runtime": "12.4",
        "libraries": {"torch": "2.13.0", "transformers": "5.25.0"},
    }
    manifest = SimpleNamespace(nodes={}, environment=env)
    cpu, gpu = _record("a"), _record("b", device="cuda:0")
    assert record_scope(manifest, cpu) == ([], frozenset({("torch", "2.13.0"), ("transformers", "5.25.0")}))
    assert record_scope(manifest, gpu)[0] == ["NVIDIA H100, driver 550, CUDA 12.4"]
    stacked = cpu.model_copy(update={"libraries": {"torch": "2.13.0", "transformers": "5.24.0"}})
    assert ("transformers", "5.24.0") in record_scope(manifest, stacked)[1]  # the stack it ran on
    assert config_facts([cpu], ["repeat"], {}, manifest).gpus == frozenset()  # a CPU-only scope holds it
    assert config_facts([gpu], ["repeat"], {}, manifest).gpus == frozenset({"NVIDIA H100, driver 550, CUDA 12.4"})
