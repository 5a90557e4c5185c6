"""The replay margin (issue 29 item 2): a ceiling no flag or matrix can pass, the calibration's
margin when a matrix names one, and every margin labelled with where it came from."""

from __future__ import annotations

import json

import pytest

from harness.spec.calibration import MAX_REPLAY_MARGIN, Calibration, Entry, Rate, Scope
from tests.cli.test_replay_cli import _one_line_error, _task


@pytest.mark.parametrize("value", ["100", "inf", "1e400", "nan", "-0.5"])
def test_a_margin_beyond_the_ceiling_is_refused_in_one_line(cli, tmp_path, value):
    task = _task(tmp_path)
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "x.tokens.json").write_text(json.dumps({"schema_version": 1, "arrays": {"codes": [[1]]}}))
    _one_line_error(cli("replay", str(task), str(folder), f"--margin={value}"), "argument --margin", "0..1.0")


def _replay_calibration(margin: float) -> dict:
    from harness import __version__

    rate = Rate(rate=0.0, low=0.0, high=0.1, errors=0, pairs=30)
    scope = Scope(
        kind="audio",
        model="tiny:musicgen",
        dtype="float32",
        new_tokens=(8, 64),
        sources=["repeat", "process"],
        kernel_classes=["any"],
        harness_version=__version__,
    )
    entry = Entry(
        scope=scope,
        waveform_max_abs=1e-4,
        waveform_rel_l2=1e-4,
        false_reject=rate,
        false_accept=rate,
        replay_margin=margin,
    )
    return Calibration(rule="replay", made_by="test", entries=[entry]).sealed().model_dump(mode="json")


@pytest.mark.slow
def test_another_seeds_candidate_is_rejected_at_the_ceiling_and_margins_are_labelled(cli, tmp_path, tiny_musicgen):
    task = _task(tmp_path)
    doc = json.loads(task.read_text())
    doc["dtype"] = "float32"
    task.write_text(json.dumps(doc))
    out = tmp_path / "node"
    assert cli("exec", str(task), "--out", str(out)).returncode == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**doc, "seed": doc["seed"] + 1}))
    res = cli("replay", str(other), str(out), f"--margin={MAX_REPLAY_MARGIN}")
    assert res.returncode == 1 and res.stdout.startswith("REJECTED"), res.stdout + res.stderr
    assert "(uncalibrated: --margin)" in res.stdout
    # a matrix naming a replay calibration: its margin, labelled with the file and its signer
    (tmp_path / "cal.json").write_text(json.dumps(_replay_calibration(0.5)))
    matrix = tmp_path / "m.toml"
    matrix.write_text(
        'name = "m"\n\n[[tasks]]\nname = "t"\nfile = "task.json"\n\n[validators.audio]\nrule = "replay"\n'
        'calibration = "cal.json"\n'
    )
    res = cli("replay", str(task), str(out), "--matrix", str(matrix), "--json")
    decision = json.loads(res.stdout)
    assert res.returncode == 0 and decision["accepted"] is True, res.stdout + res.stderr
    assert decision["margin"] == 0.5 and decision["margin_from"] == "calibrated: cal.json, unsigned"
    # a configuration the calibration does not cover is not replayed on some other margin
    doc["dtype"] = "bfloat16"
    task.write_text(json.dumps(doc))
    res = cli("replay", str(task), str(out), "--matrix", str(matrix))
    assert res.returncode == 1 and res.stdout.startswith("NOT REPLAYABLE") and "bfloat16" in res.stdout, res.stdout


def test_an_accepted_line_with_flips_does_not_say_every_position_is_the_seeds():
    from harness.compare.replay import decide
    from harness.execution.replay import Flip, ReplayTrace, StageTrace
    from harness.spec.policy import ReplayBounds

    pytest.importorskip("torch")
    flip = Flip(step=0, index=0, row=0, candidate=1, sampled=2, gap=0.1)
    stage = StageTrace(stage="text", positions=8, flips=[flip], path="one-pass")
    d = decide(
        ReplayTrace(kind="gpt", start="warm", stages=[stage]),
        None,
        ReplayBounds(margin=0.5, waveform_max_abs=0, waveform_rel_l2=0),
    )
    assert d.accepted and d.reason.startswith("7 of 8 positions are the seed's token, 1 near-tie(s)"), d.reason
    assert "every one" not in d.reason
