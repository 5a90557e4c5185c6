"""Verdicts end to end on tiny MusicGen: no false pass for a genuine code divergence, no silent
"tokens" for equal codes with other audio, thread wobble passes only through a named validator,
and the report states the network rule's figures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.spec.matrix import dump_matrix

ROOT = Path(__file__).resolve().parents[2]
TASK = {
    "model": "tiny:musicgen",
    "prompt": "80s pop track with bassy drums and synth",
    "seed": 42,
    "generation_config": {
        "max_new_tokens": 24,
        "do_sample": True,
        "top_k": 250,
        "top_p": 1.0,
        "temperature": 1.0,
        "guidance_scale": 3.0,
    },
}
COMPOSITE = {"rule": "composite", "false_accept": 0.0, "false_reject": 0.0, "pairs": 10, "source": "test"}


def matrix(tmp_path: Path, name: str, **over) -> Path:
    doc = {
        "schema_version": 1,
        "name": name,
        "repeats": 2,
        "workers": 1,
        "timeout_s": 120,
        "tasks": [{"name": "mg", "task": TASK}],
        "axes": {"threads": [1], "batch_size": [1]},
        "gates": {"verdict_dimensions": ["repeat", "process", "threads"]},
        **over,
    }
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_matrix(doc))
    return path


def _run(cli, tmp_path: Path, name: str, engine: str | None = None, env: dict | None = None, **over):
    extra = {"PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    if engine:
        extra["HARNESS_ENGINES"] = f"audio=tests.doubles:{engine}"
    res = cli("run", str(matrix(tmp_path, name, **over)), "--out", str(tmp_path / name), "--no-progress", env=extra)
    report = json.loads((tmp_path / name / "report.json").read_text())
    return res, report["configs"][0], (tmp_path / name / "report.md").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("step", [0, 5])
def test_a_planted_code_at_step_k_is_not_ready_at_step_k(cli, tmp_path, tiny_musicgen, step):
    res, config, _ = _run(
        cli,
        tmp_path,
        f"step{step}",
        "CodeAtStepMusicgen",
        {"HARNESS_PLANT_STEP": str(step)},
        validators={"audio": COMPOSITE},
        repeats=3,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert config["verdict"] == "not_ready"
    repeat = config["dimensions"]["repeat"]  # r1 planted, r0 and r2 honest
    assert repeat["first_divergence"] == [step] and repeat["levels"]["bitwise"] == 1
    assert "tokens" not in repeat["levels"]
    net = config["network"]  # 3 nodes: 2 honest agree, the planted one is invalidated
    assert net["rule"] == "composite" and net["p3of3"] == 0.0 and net["p_accepted"] == 1.0
    assert net["invalidated"] == pytest.approx(1 / 3)


@pytest.mark.slow
def test_equal_codes_with_other_audio_is_flagged_not_passed(cli, tmp_path, tiny_musicgen):
    res, config, md = _run(cli, tmp_path, "swap", "WaveformSwapMusicgen", validators={"audio": COMPOSITE}, repeats=3)
    assert res.returncode == 1, res.stdout + res.stderr
    assert config["verdict"] == "not_ready" and config["reason"].startswith("suspicious")
    assert config["dimensions"]["repeat"]["findings"] == {"waveform_far_tokens_equal": 1}  # r1 of r0..r2
    # the figures are what each validator decides: codes agree, the waveform rules do not
    assert config["agreement"]["tokens"]["p3of3"] == 1.0
    assert config["agreement"]["composite"]["p3of3"] == 0.0 and config["agreement"]["tolerance"]["p3of3"] == 0.0
    assert (
        "waveform_far_tokens_equal" in md
        and "beyond the waveform bounds the matrix gives" in md
        and "or tampering" in md
    )


@pytest.mark.slow
def test_thread_wobble_passes_only_through_the_named_composite_validator(cli, tmp_path, tiny_musicgen):
    over = {"axes": {"threads": [1, 2], "batch_size": [1]}, "repeats": 2}
    res, config, md = _run(cli, tmp_path, "named", validators={"audio": COMPOSITE}, **over)
    assert res.returncode == 0, res.stdout + res.stderr
    assert config["verdict"] == "ready_with_tolerance", config["reason"]
    assert config["dimensions"]["threads"]["levels"] == {"tokens": 1}
    assert config["network"]["rule"] == "composite" and config["network"]["p_accepted"] == 1.0
    assert "Agreement under the network's rule" in md and "proposed" in md
    res, config, _ = _run(cli, tmp_path, "unnamed", **over)
    assert res.returncode == 1 and config["verdict"] == "not_ready"
    assert "names no validator" in config["reason"]
    lax = {**COMPOSITE, "rule": "perceptual", "false_accept": 0.596}
    res, config, _ = _run(cli, tmp_path, "lax", validators={"audio": lax}, **over)
    assert config["verdict"] == "not_ready" and "0.596 is above 0.01" in config["reason"]
