"""The engines on the tiny models, in this process, as a worker runs them (harness.execution.execute
with a ModelCache: the model is loaded once, in the warm-up round, then every round is one
task). One thread and the determinism profile on, so rounds are comparable between runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.engines.base import ModelCache
from harness.execution.execute import execute
from harness.spec.tasks import parse_task

pytestmark = pytest.mark.bench
TASKS = Path(__file__).resolve().parents[2] / "matrices" / "tasks"


def _task(file: str, max_new_tokens: int):
    doc = json.loads((TASKS / file).read_text())
    doc["generation_config"]["max_new_tokens"] = max_new_tokens
    return parse_task(doc)


@pytest.mark.benchmark(group="engines")
def test_musicgen_48_tokens(benchmark, tiny_musicgen) -> None:
    task, cache = _task("tiny-musicgen-pop.json", 48), ModelCache()
    ex = benchmark.pedantic(
        lambda: execute(task, "audio", "cpu", cache, threads=1), rounds=10, warmup_rounds=2, iterations=1
    )
    assert ex.cache_hit and cache.loads == 1
    assert ex.output.arrays["waveform"].size and ex.output.arrays["codes"].shape[1] == 4
    benchmark.extra_info.update(
        new_tokens=ex.output.meta["new_tokens"], audio_samples=int(ex.output.arrays["waveform"].shape[0])
    )


@pytest.mark.benchmark(group="engines")
def test_gpt2_20_tokens(benchmark, tiny_gpt2) -> None:
    task, cache = _task("tiny-gpt2-chatbot.json", 20), ModelCache()
    ex = benchmark.pedantic(
        lambda: execute(task, "gpt", "cpu", cache, threads=1), rounds=20, warmup_rounds=2, iterations=1
    )
    assert ex.cache_hit and cache.loads == 1
    assert ex.output.response["usage"]["completion_tokens"] <= 20
    benchmark.extra_info.update(new_tokens=ex.output.meta["new_tokens"], ttft_s=ex.timings.get("time_to_first_token_s"))


@pytest.mark.benchmark(group="engines-load")
def test_musicgen_load(benchmark, tiny_musicgen) -> None:
    """A cold model load (what a worker pays once per model), imports already warm."""
    from harness.engines.musicgen import MusicgenEngine

    task, engine = _task("tiny-musicgen-pop.json", 48), MusicgenEngine()
    loaded = benchmark.pedantic(lambda: engine.load(task, "cpu"), rounds=3, warmup_rounds=1, iterations=1)
    assert "model" in loaded.objects
