"""The ``node-runner`` engine's refusals, which need no runner package (its runs: tests/peer)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from harness.spec.matrix import MatrixError, dump_matrix, expand, matrix_from_doc

AUDIO = {"model": "tiny:musicgen", "prompt": "calm jazz", "seed": 1, "generation_config": {"max_new_tokens": 8}}


def _matrix(**over) -> dict:
    return {
        "name": "node",
        "engine": "node-runner",
        "repeats": 1,
        "workers": 1,
        "tasks": [{"name": "a", "task": AUDIO}],
        **over,
    }


def test_a_missing_runner_package_is_one_line_naming_it(cli, tmp_path):
    # asked of a fresh interpreter like the CLI's (this process may hold the peer suite's copies)
    probe = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u; print(u.find_spec('audio_task') is None)"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if probe.stdout.strip() != "True":
        pytest.skip("the audio_task package is installed here: its absence cannot be shown")
    (tmp_path / "m.toml").write_text(dump_matrix(_matrix()))
    (tmp_path / "t.json").write_text(json.dumps(AUDIO))
    for args in (
        ("run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run")),
        ("exec", str(tmp_path / "t.json"), "--engine", "node-runner", "--out", str(tmp_path / "out")),
    ):
        res = cli(*args)
        assert res.returncode == 2
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(
            "error: engine 'node-runner' needs the network runner package 'audio_task'"
        ), res.stderr
    assert not (tmp_path / "run").exists(), "refused before a run directory was made"


@pytest.mark.parametrize(
    "over,message",
    [
        (
            {"tasks": [{"name": "a", "task": {**AUDIO, "prompt": "", "unconditional": True}}]},
            "cannot run unconditional",
        ),
        (
            {"tasks": [{"name": "a", "task": {"model": "tiny:audioldm", "prompt": "rain", "num_inference_steps": 2}}]},
            "runs audio and gpt tasks only",
        ),
        ({"engine": "vllm"}, "engine"),
    ],
)
def test_what_the_network_runners_cannot_run_is_refused(over, message):
    with pytest.raises(MatrixError, match=message):
        matrix_from_doc(_matrix(**over))


def test_a_batch_is_refused_for_the_node_runner():
    with pytest.raises(MatrixError, match="one task per call"):
        expand(matrix_from_doc(_matrix(axes={"batch_size": [1, 2]})))
