"""The replay rule's decision and the explanation of a divergence: pure cases first, then the
rule on the tiny models against every cheat it must reject."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.compare.replay import (
    ReplayDecision,
    Side,
    bounds_for,
    classify,
    decide,
    explain_divergence,
    first_divergent_step,
    validate,
)
from harness.execution.replay import Flip, ReplayTrace, StageTrace, StepDetail
from harness.spec.policy import ReplayBounds, Thresholds

BOUNDS = ReplayBounds(margin=0.1, waveform_max_abs=1e-5, waveform_rel_l2=1e-4)


def _trace(flips=(), problem=None, decoded=None, stage="audio"):
    return ReplayTrace(
        kind="audio",
        start="warm",
        stages=[
            StageTrace(
                stage=stage,
                path="one-pass",
                steps=10,
                positions=40,
                flips=list(flips),
                problem=problem,
                decoded=decoded,
            )
        ],
    )


def test_decide_accepts_near_ties_and_rejects_confident_replacements():
    wave = np.zeros((100, 1), np.float32)
    ok = decide(_trace([Flip(3, 1, 2, 5, 6, 0.05)], decoded=wave), wave, BOUNDS)
    assert ok.accepted and ok.flips == 1 and "near-tie" in ok.reason
    bad = decide(_trace([Flip(3, 1, 2, 5, 6, 0.05), Flip(7, 0, 7, 9, 1, 2.5)], decoded=wave), wave, BOUNDS)
    assert bad.accepted is False and "step 7" in bad.reason and "confident" in bad.reason
    impossible = decide(_trace([Flip(0, 0, 0, 1, 2, math.inf)], decoded=wave), wave, BOUNDS)
    assert impossible.accepted is False and "impossible" in impossible.reason and impossible.max_gap is None
    assert decide(_trace(problem="12 frames where the task generates 20"), wave, BOUNDS).accepted is False


def test_decide_rejects_a_waveform_that_is_not_the_decoding_of_its_codes():
    wave = np.zeros((100, 1), np.float32)
    edited = wave.copy()
    edited[50] = 1e-3
    d = decide(_trace(decoded=wave), edited, BOUNDS)
    assert d.accepted is False and "not the decoding" in d.reason
    assert decide(_trace(decoded=wave), wave[:90], BOUNDS).accepted is False  # cut short


def test_bounds_per_dtype_replace_the_global_ones():
    thr = Thresholds(replay_margin=0.01, replay_dtypes={"bfloat16": BOUNDS})
    assert bounds_for(thr, "bfloat16") == BOUNDS
    assert bounds_for(thr, "float32").margin == 0.01
    assert bounds_for(thr, "float32").waveform_max_abs == thr.waveform_max_abs


def test_first_divergent_step_follows_the_delay_pattern():
    a = np.zeros((6, 4), np.int64)
    b = a.copy()
    b[3, 0] = 1  # frame 3, codebook 0: step 3
    b[1, 3] = 1  # frame 1, codebook 3: step 4
    assert first_divergent_step("audio", a, b) == (3, 0, 3)
    b[1, 2] = 1  # frame 1, codebook 2: step 3, codebook 2 (same step, larger row)
    assert first_divergent_step("audio", a, b)[0] == 3
    assert first_divergent_step("audio", a, a) is None
    t = np.array([[1, 2, 3, -1], [4, 5, 6, 7]])
    u = t.copy()
    u[1, 2] = 9
    assert first_divergent_step("text", t, u) == (2, 1, 2)


def _detail(scores, draws=None):
    scores = np.asarray(scores, dtype=np.float64)[None]
    return StepDetail(
        step=0,
        candidate=np.array([0]),
        sampled=np.array([0]),
        valid=np.array([True]),
        scores=scores,
        kept=np.isfinite(scores),
        log_draws=None if draws is None else np.log(np.asarray(draws))[None],
    )


def test_classify_benign_near_tie_and_suspicious_replacement():
    near = _detail([1.0, 0.999, -3.0])
    assert classify(near, near, 0, 0, 1, margin=0.01, greedy=True)[2] == "benign"  # top-2 gap 0.001
    far = _detail([3.0, 0.0, -3.0])
    ga, gb, cls = classify(far, far, 0, 0, 1, margin=0.01, greedy=True)
    assert cls == "suspicious" and ga == pytest.approx(3.0) and gb == pytest.approx(-3.0)
    drawn = _detail([0.0, 0.0, 0.0], draws=[1.0, 1.0005, 5.0])  # equal logits; the draw decides, barely
    assert classify(drawn, drawn, 0, 0, 1, margin=0.01, greedy=False)[2] == "benign"


# --- on the tiny models ---------------------------------------------------------------------------

MUSIC = {
    "model": "tiny:musicgen",
    "prompt": "80s pop track with bassy drums and synth",
    "seed": 42,
    "dtype": "float32",
    "generation_config": {"max_new_tokens": 24, "do_sample": True, "top_k": 250, "guidance_scale": 3.0},
}
GPT = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "tell me a story about a cat"}],
    "seed": 42,
    "generation_config": {"max_new_tokens": 24, "do_sample": True, "top_k": 20},
}


@pytest.fixture(scope="module")
def runs(tiny_musicgen, tiny_gpt2):
    from harness.engines.base import ModelCache
    from harness.execution.execute import execute
    from harness.spec.tasks import parse_task

    cache = ModelCache(capacity=8)

    def run(doc, kind="audio", **kw):
        return execute(parse_task(doc, kind), kind, "cpu", cache, **kw).output

    return cache, run


def _cand(out, **arrays):
    from harness.execution.replay import Candidate

    return Candidate(arrays={**out.arrays, **arrays}, response=out.response)


@pytest.mark.slow
def test_honest_outputs_accept_and_every_cheat_rejects(runs):
    from harness.spec.tasks import parse_task

    cache, run = runs
    task = parse_task(MUSIC, "audio")
    honest = run(MUSIC)
    assert validate("audio", task, _cand(honest), cache=cache).accepted is True
    cold = run(MUSIC, load="cold")  # a node's first task: seeded before its model loaded
    d = validate("audio", task, _cand(cold), cache=cache)
    assert d.accepted is True and d.start == "cold"
    assert validate("audio", task, _cand(run(MUSIC, threads=2)), cache=cache).accepted is True
    cheats = {
        "another seed": _cand(run({**MUSIC, "seed": 43})),
        "another prompt": _cand(run({**MUSIC, "prompt": "calm acoustic guitar"})),
        "bfloat16 passed off as float32": _cand(run({**MUSIC, "dtype": "bfloat16"})),
    }
    codes = honest.arrays["codes"].copy()
    forced = codes.copy()
    forced[8, 1] = (forced[8, 1] + 97) % 256
    cheats["a code forced"] = _cand(honest, codes=forced)
    other = run({**MUSIC, "seed": 44}).arrays
    k = 10
    cheats["re-generated from step k"] = _cand(honest, codes=np.concatenate([codes[:k], other["codes"][k:]]))
    cheats["truncated"] = _cand(honest, codes=codes[:-4], waveform=honest.arrays["waveform"][:-2560])
    edited = honest.arrays["waveform"].copy()
    edited[1000:1100] += 1e-3
    cheats["honest codes, edited waveform"] = _cand(honest, waveform=edited)
    for name, cand in cheats.items():
        d = validate("audio", task, cand, cache=cache)
        assert d.accepted is False, (name, d.reason)


@pytest.mark.slow
def test_gpt_cheats_reject_and_unreplayable_tasks_are_never_accepted(runs):
    from harness.spec.tasks import parse_task

    cache, run = runs
    task = parse_task(GPT, "gpt")
    honest = run(GPT, "gpt")
    assert validate("gpt", task, _cand(honest), cache=cache).accepted is True
    assert validate("gpt", task, _cand(run({**GPT, "seed": 5}, "gpt")), cache=cache).accepted is False
    ids = honest.arrays["token_ids"].copy()
    ids[0, 1] = (ids[0, 1] + 7) % 100
    assert validate("gpt", task, _cand(honest, token_ids=ids), cache=cache).accepted is False
    for gc in ({"do_sample": False}, {"do_sample": True, "num_beams": 2}):
        doc = {**GPT, "generation_config": {"max_new_tokens": 8, **gc}}
        d = validate("gpt", parse_task(doc, "gpt"), _cand(run(doc, "gpt")), cache=cache)
        assert d.accepted is None and "not replayable" in d.reason and not d.replayable
    d = validate("audio", parse_task(MUSIC, "audio"), _cand(run(MUSIC)), ran_on="cuda:0", cache=cache)
    assert d.accepted is None and "CUDA" in d.reason


@pytest.mark.slow
def test_explain_a_near_tie_as_benign_and_a_replacement_as_suspicious(runs):
    """Side B takes the runner-up at the honest run's closest call (a near-tie flipped) or a
    far-off code at a confident step: each side is replayed under its own configuration."""
    from harness.execution.replay import Candidate, Options, replay_output
    from harness.spec.tasks import parse_task

    cache, run = runs
    honest = run(MUSIC)
    task = parse_task(MUSIC, "audio")
    steps = tuple(range(honest.arrays["codes"].shape[0] + 3))
    stage = replay_output(
        "audio", task, Candidate(arrays=honest.arrays), cache=cache, options=Options(detail_steps=steps)
    ).stages[0]
    best = None
    for t, d in stage.details.items():
        z = d.scores - d.log_draws
        for r in np.nonzero(d.valid)[0]:
            order = np.argsort(-z[r])
            slack = z[r, order[0]] - z[r, order[1]]
            if best is None or slack < best[0]:
                best = (slack, t, int(r), int(order[1]))
    _, t, r, runner_up = best
    frame = t - r
    near = honest.arrays["codes"].copy()
    near[frame, r] = runner_up
    e = explain_divergence(
        "audio",
        Side(doc=MUSIC, arrays=honest.arrays),
        Side(doc=MUSIC, arrays={"codes": near}),
        margin=0.05,
        cache=cache,
    )
    assert e.step == t and e.cls == "benign", e.sentence
    far = honest.arrays["codes"].copy()
    far[2, 0] = (far[2, 0] + 128) % 256
    e = explain_divergence(
        "audio", Side(doc=MUSIC, arrays=honest.arrays), Side(doc=MUSIC, arrays={"codes": far}), margin=0.05, cache=cache
    )
    assert e.step == 2 and e.cls == "suspicious" and "confident" in e.sentence
    assert isinstance(validate("audio", task, Candidate(arrays=honest.arrays), cache=cache), ReplayDecision)


@pytest.mark.slow
def test_each_stage_of_a_chain_replays(runs):
    import json
    from pathlib import Path

    from harness.spec.tasks import parse_task

    cache, run = runs
    doc = json.loads(
        (Path(__file__).resolve().parents[2] / "matrices" / "tasks" / "tiny-chain-musicgen.json").read_text()
    )
    doc["audio_stage"]["generation_config"]["max_new_tokens"] = 16
    task = parse_task(doc, "chain")
    out = run(doc, "chain")
    d = validate("chain", task, _cand(out), cache=cache)
    assert d.accepted is True, d.reason
    assert d.positions == int((out.arrays["text_token_ids"] >= 0).sum()) + out.arrays["codes"].size
    ids = out.arrays["text_token_ids"].copy()
    ids[0, 0] = (ids[0, 0] + 5) % 100
    assert "text" in validate("chain", task, _cand(out, text_token_ids=ids), cache=cache).reason
    codes = out.arrays["codes"].copy()
    codes[4, 2] = (codes[4, 2] + 77) % 256
    assert "audio step" in validate("chain", task, _cand(out, codes=codes), cache=cache).reason


def test_a_matrix_names_the_replay_calibration_and_each_configuration_gets_its_margin(tmp_path):
    """docs/replay-calibration.json (harness calibrate --rule replay) through the matrix loader and the
    per-configuration policy: float32 and bfloat16 each judged with their own margin and
    decoder bounds; another token length is outside the scope."""
    import shutil
    from pathlib import Path

    from harness.spec.calibration import Facts, load_calibration
    from harness.spec.matrix import dump_matrix, load_matrix
    from harness.spec.policy import config_policy, policy_of

    shipped = Path(__file__).resolve().parents[2] / "docs" / "replay-calibration.json"
    shutil.copy(shipped, tmp_path / "replay.json")
    cal = load_calibration(shipped)
    doc = {
        "schema_version": 1,
        "name": "r",
        "tasks": [
            {"name": "mg", "task": {**MUSIC, "generation_config": {**MUSIC["generation_config"], "max_new_tokens": 32}}}
        ],
        "axes": {"dtype": ["float32", "bfloat16"]},
        "validators": {"audio": {"rule": "replay", "calibration": "replay.json"}},
    }
    (tmp_path / "m.toml").write_text(dump_matrix(doc))
    matrix = load_matrix(tmp_path / "m.toml")
    policy = policy_of(matrix.spec.model_dump(mode="json"), "m")
    for entry in cal.entries:
        sc = entry.scope
        facts = Facts(
            kind="audio",
            model=sc.model,
            dtype=sc.dtype,
            quantize_bits=None,
            weights_sha256=sc.weights_sha256,
            new_tokens=32,
            kernel_classes=frozenset(sc.kernel_classes),
        )
        cp = config_policy(policy, facts)
        assert cp.validator is not None and cp.validator.rule == "replay", cp.out_of_scope
        assert cp.thresholds.replay_margin == entry.replay_margin
        assert bounds_for(cp.thresholds, sc.dtype).waveform_max_abs == entry.waveform_max_abs
    outside = config_policy(
        policy, Facts(kind="audio", model="tiny:musicgen", dtype="float32", quantize_bits=None, new_tokens=64)
    )
    assert outside.validator is None and "outside" in outside.out_of_scope
