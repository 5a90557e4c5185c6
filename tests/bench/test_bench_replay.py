"""Validation cost against generation: the replay rule on tiny MusicGen at 512 tokens (goal:
validation <= 25% of generation), in one process, one thread, rounds interleaved so a busy
machine slows both alike. The ratio is in the benchmark's extra_info and asserted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from harness.engines.base import ModelCache
from harness.execution.execute import execute
from harness.spec.tasks import parse_task

pytestmark = pytest.mark.bench
TASKS = Path(__file__).resolve().parents[2] / "matrices" / "tasks"
GOAL = 0.25


def _ratio(kind: str, doc: dict, rounds: int = 3) -> tuple[float, float, float, object]:
    from harness.compare.replay import validate
    from harness.execution.replay import Candidate

    task, cache = parse_task(doc, kind), ModelCache()
    execute(task, kind, "cpu", cache, threads=1)  # warm-up: the model loads once
    gen, val, decision = [], [], None
    for _ in range(rounds):
        start = time.perf_counter()
        out = execute(task, kind, "cpu", cache, threads=1).output
        gen.append(time.perf_counter() - start)
        start = time.perf_counter()
        decision = validate(kind, task, Candidate(arrays=out.arrays, response=out.response), cache=cache)
        val.append(time.perf_counter() - start)
    return float(np.median(gen)), float(np.median(val)), float(np.median(val) / np.median(gen)), decision


@pytest.mark.benchmark(group="replay")
def test_replay_costs_at_most_a_quarter_of_generation_at_512_tokens(benchmark, tiny_musicgen) -> None:
    doc = json.loads((TASKS / "tiny-musicgen-pop.json").read_text())
    doc["generation_config"]["max_new_tokens"] = 512
    gen, val, ratio, decision = benchmark.pedantic(lambda: _ratio("audio", doc), rounds=1, iterations=1)
    benchmark.extra_info.update(
        generate_s=round(gen, 4),
        validate_s=round(val, 4),
        ratio=round(ratio, 4),
        positions=decision.positions,
        path=decision.paths,
    )
    assert decision.accepted, decision.reason
    assert decision.paths == ["one-pass"]
    assert ratio <= GOAL, f"validation {val:.2f} s is {ratio:.0%} of generation {gen:.2f} s (goal {GOAL:.0%})"


@pytest.mark.benchmark(group="replay")
def test_replay_cost_on_gpt2(benchmark, tiny_gpt2) -> None:
    doc = json.loads((TASKS / "tiny-gpt2-chatbot.json").read_text())
    doc["generation_config"].update(max_new_tokens=200, do_sample=True)
    gen, val, ratio, decision = benchmark.pedantic(lambda: _ratio("gpt", doc), rounds=1, iterations=1)
    benchmark.extra_info.update(
        generate_s=round(gen, 4), validate_s=round(val, 4), ratio=round(ratio, 4), positions=decision.positions
    )
    assert decision.accepted, decision.reason
