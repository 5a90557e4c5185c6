"""The ``node-runner`` engine: the network's runner package itself, run under the harness.

With the patched reference runners importable it must give what the harness's engines give
(they are proven equal to the runners by the other peer tests), capture codes and token ids,
and let an operator certify a node's own code against a reference made by the harness.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.engines.base import ModelCache
from harness.execution.execute import execute
from harness.spec.matrix import dump_matrix
from harness.spec.tasks import parse_task

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
AUDIO = {
    "model": "tiny:musicgen",
    "prompt": "80s pop track with bassy drums and synth",
    "seed": 42,
    "generation_config": {"max_new_tokens": 24, "do_sample": True},
}
GPT = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "hello world"}],
    "seed": 0,
    "generation_config": {"max_new_tokens": 40, "do_sample": True, "top_k": 20, "num_return_sequences": 2},
}


@pytest.mark.parametrize("kind,doc", [("audio", AUDIO), ("gpt", GPT)])
def test_node_runner_gives_the_harness_engines_outputs_cold_and_warm(
    kind, doc, patched_runners, runner_cwd, tiny_musicgen, tiny_gpt2
):
    task = parse_task(doc)
    theirs, ours = ModelCache(), ModelCache()
    for load in ("cold", "warm"):
        node = execute(task, kind, "cpu", theirs, load=load, engine="node-runner")
        harness = execute(task, kind, "cpu", ours, load=load)
        assert node.output.digests() == harness.output.digests(), f"{kind} {load}"
        assert node.model_meta["engine"] == "node-runner"
        assert node.output.discrete in node.output.arrays  # codes / token ids were captured
    assert node.timings["load_s"] == 0.0, "the warm call was served from the runner's cache"


def test_an_operator_certifies_the_node_runner_against_a_harness_reference(
    cli, tmp_path, patched_runners, tiny_musicgen, tiny_gpt2
):
    doc = {
        "name": "node",
        "repeats": 1,
        "workers": 1,
        "timeout_s": 300,
        "tasks": [{"name": "music", "task": AUDIO}, {"name": "chat", "task": GPT}],
        "axes": {"threads": [1], "load": ["cold", "warm"]},
        "gates": {"verdict_dimensions": ["repeat", "process"]},
    }  # sampled MusicGen: cold != warm, by design
    (tmp_path / "ref.toml").write_text(dump_matrix(doc))
    (tmp_path / "node.toml").write_text(dump_matrix({**doc, "engine": "node-runner"}))
    ref = cli("run", str(tmp_path / "ref.toml"), "--out", str(tmp_path / "ref"), "--no-progress", "--formats", "json")
    assert ref.returncode == 0, ref.stderr
    assert cli("bundle", str(tmp_path / "ref"), "--out", str(tmp_path / "ref.zip")).returncode == 0
    runner_path = os.pathsep.join(str(p) for p in patched_runners.values())
    cert = cli(
        "certify",
        "--reference",
        str(tmp_path / "ref.zip"),
        "--matrix",
        str(tmp_path / "node.toml"),
        "--out",
        str(tmp_path / "cert"),
        env={"PYTHONPATH": os.pathsep.join([str(REPO), runner_path])},
    )
    assert cert.returncode == 0, cert.stdout + cert.stderr
    lines = (tmp_path / "cert" / "results.jsonl").read_text().splitlines()
    engines = [json.loads(line)["model_meta"].get("engine") for line in lines if line.strip()]
    assert engines == ["node-runner"] * 4
