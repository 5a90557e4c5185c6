"""The replay study: its scores and DET points, its calibration file (the calibration format's
version 2, a version-1 file still reading), and a small study end to end."""

from __future__ import annotations

import math

import pytest

from harness.compare.levels import Thresholds
from harness.compare.replay import ReplayDecision
from harness.workflows.replay_study import ReplayStudySettings, _det, _score


def _decision(gap, max_abs=0.0, rel=0.0, accepted=True, lengths=(10, 10)):
    return ReplayDecision(
        accepted=accepted,
        reason="",
        max_gap=gap,
        waveform={"max_abs": max_abs, "rel_l2": rel, "length_a": lengths[0], "length_b": lengths[1]},
    )


def test_scores_scale_margin_and_decoder_bounds_together():
    thr = Thresholds(replay_margin=0.1, waveform_max_abs=1e-3, waveform_rel_l2=1e-3)
    assert _score(_decision(0.05), thr) == pytest.approx(0.5)
    assert _score(_decision(0.0, max_abs=2e-3), thr) == pytest.approx(2.0)
    assert math.isinf(_score(_decision(None), thr))  # an impossible token
    assert math.isinf(_score(_decision(0.0, lengths=(10, 9)), thr))
    assert math.isinf(_score(ReplayDecision(accepted=None, reason="not replayable"), thr))
    det = _det([0.2, 0.5, 3.0], [0.8, math.inf, 40.0])
    i = det["threshold"].index(1.0)
    assert det["frr"][i] == pytest.approx(1 / 3) and det["far"][i] == pytest.approx(1 / 3)
    assert det["operating"] == [pytest.approx(1 / 3), pytest.approx(1 / 3)]


def test_a_version_one_calibration_still_reads():
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
    assert cal.entries[0].replay_margin is None and cal.schema_version == 1


@pytest.mark.slow
def test_a_small_study_calibrates_and_holds_out(tiny_musicgen):
    from harness.spec.calibration import parse_calibration
    from harness.workflows.replay_study import run_study

    result = run_study(ReplayStudySettings(seeds=2, max_new_tokens=12, configs=(("float32", None),), levels=()))
    (c,) = result.configs
    assert c.frr.rate == 0.0 and c.frr.pairs == 6  # repeat, threads, process on 2 held-out tasks
    assert c.far.rate == 0.0 and c.far.pairs == 12
    assert 0 < c.margin < 0.01 and c.waveform_max_abs > 0
    cal = parse_calibration(result.calibration.model_dump(mode="json"), "study")
    assert cal.rule == "replay" and cal.entries[0].replay_margin == c.margin
    assert "no AVX2" in result.summary
    from harness.report.replay_study import render_markdown

    assert "| float32 |" in render_markdown(result)
