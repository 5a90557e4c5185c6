"""GPT: the harness's response is byte for byte the one a node sends, cold and warm.

A node (crynux-worker) sends ``json.dumps(run_task(...))``: default separators, ASCII escapes,
the runner's key order. The network hashes those bytes whole, so ``usage`` and every
``finish_reason`` must be the runner's, not merely the tokens. ``harness exec`` writes its
response file the same way (one case below goes through the real CLI).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.engines.base import ModelCache
from harness.execution.execute import execute
from harness.spec.tasks import parse_task
from tests.peer.corpus import GPT_CASES, STANDIN_GPT_CASES, gpt_doc

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def runner_bytes(doc: dict, cache) -> bytes:
    from gpt_task.inference import run_task

    resp = run_task(
        model=doc["model"],
        messages=doc["messages"],
        generation_config=doc.get("generation_config"),
        seed=doc["seed"],
        dtype=doc.get("dtype", "auto"),
        quantize_bits=doc.get("quantize_bits"),
        model_cache=cache,
    )
    return json.dumps(resp).encode()


def harness_bytes(doc: dict, cache: ModelCache, load: str) -> bytes:
    return json.dumps(execute(parse_task(doc), "gpt", "cpu", cache, load=load).output.response).encode()


@pytest.mark.parametrize("case", list(GPT_CASES))
def test_gpt_case_is_byte_identical_cold_and_warm(case, patched_runners, runner_cwd, tiny_gpt2):
    check_case(case, tiny_gpt2)


@pytest.mark.parametrize("case", STANDIN_GPT_CASES)
def test_standin_case_is_byte_identical_cold_and_warm(case, patched_runners, runner_cwd, standin_gpt2):
    """The trained stand-in: the runner is given its package folder, as a node a cache snapshot."""
    check_case(case, standin_gpt2)


def check_case(case: str, folder: Path) -> None:
    from gpt_task.cache.memory_impl import MemoryModelCache

    if GPT_CASES[case]["doc"].get("quantize_bits"):
        pytest.importorskip("bitsandbytes")
    doc, other = gpt_doc(case, str(folder)), gpt_doc(case, str(folder), seed=43)
    node_cache = MemoryModelCache()
    node = {
        "cold": runner_bytes(doc, node_cache),
        "warm": runner_bytes(doc, node_cache),
        "other": runner_bytes(other, node_cache),
    }
    cache = ModelCache()
    ours = {
        "cold": harness_bytes(doc, cache, "cold"),
        "warm": harness_bytes(doc, cache, "warm"),
        "other": harness_bytes(other, cache, "warm"),
    }
    assert ours["cold"] == node["cold"], f"{case}: cold start differs from the runner's first call"
    assert ours["warm"] == node["warm"], f"{case}: warm call differs from the runner's cached call"
    runner_sensitive = node["other"] != node["warm"]
    assert (ours["other"] != ours["warm"]) == runner_sensitive, f"{case}: seed sensitivity differs from the runner's"
    assert runner_sensitive == GPT_CASES[case]["seed_sensitive"], f"{case}: no longer shows what it is there for"
    if "finish" in GPT_CASES[case]:
        got = [c["finish_reason"] for c in json.loads(node["cold"])["choices"]]
        assert got == GPT_CASES[case]["finish"], f"{case}: no longer shows what it is there for"


def test_usage_counts_padded_rows_as_the_runner_does(patched_runners, runner_cwd, tiny_gpt2):
    """Two rows, one stopping early: the runner counts both rows at the longer row's length."""
    resp = json.loads(harness_bytes(gpt_doc("two-sequences-one-stops", str(tiny_gpt2)), ModelCache(), "cold"))
    budget = GPT_CASES["two-sequences-one-stops"]["doc"]["generation_config"]["max_new_tokens"]
    assert resp["usage"]["completion_tokens"] == 2 * budget
    assert resp["usage"]["total_tokens"] == resp["usage"]["prompt_tokens"] + 2 * budget


def test_harness_exec_writes_the_bytes_a_node_sends(patched_runners, runner_cwd, tiny_gpt2):
    from gpt_task.cache.memory_impl import MemoryModelCache

    doc = gpt_doc("two-sequences-one-stops", str(tiny_gpt2))
    task = runner_cwd / "two.json"
    task.write_text(json.dumps(doc))
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "exec", str(task), "--threads", "1", "--out", str(runner_cwd / "out")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    written = (runner_cwd / "out" / "two.response.json").read_bytes()
    assert written == runner_bytes(doc, MemoryModelCache())


def test_stop_strings_fail_on_the_runner_and_lint_says_so(patched_runners, runner_cwd, tiny_gpt2):
    """A measured difference kept visible: the runner cannot run stop_strings (no tokenizer
    reaches generate()), so nodes fail such a task; the harness runs it and warns."""
    from gpt_task.cache.memory_impl import MemoryModelCache

    from harness.spec.lint import lint_task

    doc = {**gpt_doc("greedy", str(tiny_gpt2)), "generation_config": {"max_new_tokens": 20, "stop_strings": ["sax"]}}
    with pytest.raises(Exception) as caught:
        runner_bytes(doc, MemoryModelCache())
    cause = caught.value.__cause__ or caught.value.__context__
    assert "stop strings" in str(cause) and "tokenizer" in str(cause)
    assert "stop-strings-fail-on-node" in {w.code for w in lint_task(parse_task(doc), "cpu")}
