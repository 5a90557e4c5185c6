"""The replay rule end to end through `harness run`: a planted code is never passed and its
first divergent step is explained as suspicious; honest divergence by design (batch, cold load)
passes where only replay can pass it; audio that is not the decoding of its codes is refused."""

from __future__ import annotations

import pytest

from tests.analysis.test_verdicts import _run

REPLAY = {"rule": "replay", "false_accept": 0.0, "false_reject": 0.0, "pairs": 10, "source": "test"}


@pytest.mark.slow
def test_a_planted_code_is_not_ready_under_replay_and_explained_suspicious(cli, tmp_path, tiny_musicgen):
    res, config, md = _run(
        cli,
        tmp_path,
        "plant",
        "CodeAtStepMusicgen",
        {"HARNESS_PLANT_STEP": "5"},
        validators={"audio": REPLAY},
        repeats=3,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert config["verdict"] == "not_ready"
    repeat = config["dimensions"]["repeat"]
    assert repeat["first_divergence"] == [5] and repeat["rejected"]["replay"] == 1
    assert repeat["explained"] == {"suspicious": 1}
    assert config["replay"]["replayed"] == 3 and config["replay"]["rejected"] == 1
    net = config["network"]  # 3 nodes: 2 honest agree, the planted one is invalidated
    assert net["rule"] == "replay" and net["p_accepted"] == 1.0 and net["invalidated"] == pytest.approx(1 / 3)
    assert "suspicious" in md and "Replay" in md
    # harness locate shows the same explanation beside the located module (its explain_pair)
    from harness.workflows.locate import _cells, explain_pair

    store, records, cells = _cells(tmp_path / "plant")
    a, b = config["dimensions"]["repeat"]["worst_pair"]
    e = explain_pair(store, records[a], records[b], cells[a], cells[b], "divergent")
    assert e["cls"] == "suspicious" and e["step"] == 5 + e["row"] and e["index"] == 5


@pytest.mark.slow
def test_divergence_by_design_passes_only_under_replay(cli, tmp_path, tiny_musicgen):
    """A task in a batch of 2 and a cold start draw other numbers: their codes differ from the
    reference from early on, so composite rejects them; each replays against the task."""
    over = {
        "axes": {"threads": [1], "batch_size": [1, 2], "load": ["warm", "cold"]},
        "repeats": 1,
        "exclude": [{"batch_size": 2, "load": "cold"}],
        "gates": {"verdict_dimensions": ["repeat", "process", "batch", "load"]},
    }
    res, config, _ = _run(cli, tmp_path, "design", validators={"audio": REPLAY}, **over)
    assert res.returncode == 0, res.stdout + res.stderr
    assert config["verdict"] == "ready_with_tolerance", config["reason"]
    assert (
        config["dimensions"]["batch"]["worst"] == "divergent" and config["dimensions"]["load"]["worst"] == "divergent"
    )
    assert config["replay"]["accepted"] == config["replay"]["replayed"] == 3
    assert config["agreement"]["replay"]["p3of3"] == 1.0 and config["agreement"]["composite"]["p3of3"] == 0.0
    res, config, _ = _run(
        cli, tmp_path, "design-composite", validators={"audio": {**REPLAY, "rule": "composite"}}, **over
    )
    assert res.returncode == 1 and config["verdict"] == "not_ready"


@pytest.mark.slow
def test_honest_codes_with_other_audio_are_refused_by_replay(cli, tmp_path, tiny_musicgen):
    res, config, _ = _run(cli, tmp_path, "swap", "WaveformSwapMusicgen", validators={"audio": REPLAY}, repeats=3)
    assert res.returncode == 1 and config["verdict"] == "not_ready"
    assert "not the decoding of its codes" in config["replay"]["first_rejection"]


@pytest.mark.slow
def test_bfloat16_across_kernel_sets_passes_under_the_shipped_replay_calibration(cli, tmp_path, tiny_musicgen):
    """The headline case: bfloat16 MusicGen gives other codes under the next narrower kernels
    (AVX2 on an AVX-512 machine) than native. Under the shipped replay calibration (`harness calibrate --rule replay`)
    both executions replay, the isa pair's first divergent step is explained benign (the
    narrower side's distribution computed in a worker at the level it resolved to), and
    composite would have rejected the honest narrower node."""
    from harness.isa import BELOW_NATIVE, unavailable

    if unavailable(BELOW_NATIVE):
        pytest.skip(unavailable(BELOW_NATIVE))
    from tests.analysis.test_verdicts import ROOT, TASK

    task = {**TASK, "dtype": "bfloat16", "generation_config": {**TASK["generation_config"], "max_new_tokens": 32}}
    over = {
        "tasks": [{"name": "mg", "task": task}],
        "axes": {"threads": [1], "batch_size": [1], "isa": ["native", BELOW_NATIVE]},
        "repeats": 1,
        "gates": {"verdict_dimensions": ["isa"]},
        "validators": {"audio": {"rule": "replay", "calibration": str(ROOT / "docs" / "replay-calibration.json")}},
    }
    res, config, _md = _run(cli, tmp_path, "isa", **over)
    isa = config["dimensions"]["isa"]
    assert isa["worst"] not in ("bitwise", "tokens"), isa  # other codes: codes-equal rules reject the honest node
    assert res.returncode == 0 and config["verdict"] == "ready_with_tolerance", config["reason"]
    assert isa["explained"] == {"benign": 1} and "benign" in isa["explanation"]
    assert isa["rejected"]["composite"] == 1 and isa["rejected"]["replay"] == 0
    assert config["replay"]["accepted"] == 2
