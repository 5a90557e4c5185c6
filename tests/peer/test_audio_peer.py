"""MusicGen: the harness gives the bytes the network's audio runner gives, cold and warm.

The runner's side is ``audio_task.inference.run_task`` with its own ``MemoryModelCache`` (a
node's): its first call builds the pipeline after ``set_seed`` (cold), the second is served
from the cache (warm). Its audio is written as a node writes it (``scipy.io.wavfile.write``,
the documented recipe); the harness's is the WAV ``harness exec`` writes. Equality is of the
file bytes.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from harness.engines.audio_io import write_wav
from harness.engines.base import ModelCache
from harness.execution.execute import execute
from harness.spec.tasks import parse_task
from tests.peer.corpus import AUDIO_CASES, STANDIN_AUDIO_CASES, audio_doc

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def node_wav(audio: np.ndarray, rate: int) -> bytes:
    from scipy.io import wavfile

    buf = io.BytesIO()
    wavfile.write(buf, rate, audio)
    return buf.getvalue()


def runner_wav(doc: dict, cache) -> bytes:
    from audio_task.inference import run_task

    audio, rate = run_task(
        model=doc["model"],
        prompt=doc["prompt"],
        generation_config=doc.get("generation_config"),
        seed=doc["seed"],
        dtype=doc.get("dtype", "auto"),
        quantize_bits=doc.get("quantize_bits"),
        model_cache=cache,
    )
    assert audio.dtype == np.float32 and audio.ndim == 2  # (samples, channels), as the runner documents
    return node_wav(audio, rate)


def harness_wav(doc: dict, cache: ModelCache, load: str, tmp: Path) -> bytes:
    out = execute(parse_task(doc), "audio", "cpu", cache, load=load).output
    path = tmp / f"{load}-{doc['seed']}.wav"
    write_wav(path, out.arrays["waveform"], out.sampling_rate)  # what `harness exec` writes
    return path.read_bytes()


@pytest.mark.parametrize("case", list(AUDIO_CASES))
def test_audio_case_is_byte_identical_cold_and_warm(case, patched_runners, runner_cwd, tiny_musicgen):
    check_case(case, tiny_musicgen, runner_cwd)


@pytest.mark.parametrize("case", STANDIN_AUDIO_CASES)
def test_standin_case_is_byte_identical_cold_and_warm(case, patched_runners, runner_cwd, standin_musicgen):
    """The trained stand-in: the runner is given its package folder, as a node a cache snapshot."""
    check_case(case, standin_musicgen, runner_cwd)


def check_case(case: str, folder: Path, runner_cwd: Path) -> None:
    from audio_task.cache.memory_impl import MemoryModelCache

    if AUDIO_CASES[case]["doc"].get("quantize_bits"):
        pytest.importorskip("bitsandbytes")
    doc, other = audio_doc(case, str(folder)), audio_doc(case, str(folder), seed=43)
    node_cache = MemoryModelCache()
    node = {
        "cold": runner_wav(doc, node_cache),
        "warm": runner_wav(doc, node_cache),
        "other": runner_wav(other, node_cache),
    }
    cache = ModelCache()
    ours = {
        "cold": harness_wav(doc, cache, "cold", runner_cwd),
        "warm": harness_wav(doc, cache, "warm", runner_cwd),
        "other": harness_wav(other, cache, "warm", runner_cwd),
    }
    assert ours["cold"] == node["cold"], f"{case}: cold start differs from the runner's first call"
    assert ours["warm"] == node["warm"], f"{case}: warm call differs from the runner's cached call"
    runner_sensitive = node["other"] != node["warm"]
    assert (ours["other"] != ours["warm"]) == runner_sensitive, f"{case}: seed sensitivity differs from the runner's"
    assert runner_sensitive == AUDIO_CASES[case]["seed_sensitive"], f"{case}: no longer shows what it is there for"


def test_runner_first_and_cached_calls_differ_for_a_sampled_task(patched_runners, runner_cwd, tiny_musicgen):
    """The network's own audio runner is not reproducible with itself: its first call builds the
    pipeline after set_seed (and the build draws random numbers), a cached call does not."""
    from audio_task.cache.memory_impl import MemoryModelCache

    cache = MemoryModelCache()
    doc = audio_doc("sampled-no-top-p", str(tiny_musicgen))
    cold, warm, warm_again = runner_wav(doc, cache), runner_wav(doc, cache), runner_wav(doc, cache)
    assert cold != warm and warm == warm_again
    greedy = audio_doc("doc-example-float32", str(tiny_musicgen))
    assert runner_wav(greedy, MemoryModelCache()) == runner_wav(greedy, cache), "top_p 0.0 draws nothing: cold == warm"


@pytest.fixture(scope="module")
def exec_seeds(tiny_musicgen, tmp_path_factory):
    """``harness exec`` (the real CLI, default cold) on the sampled task with seeds 42 and 43."""
    import os
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("exec-audio")
    procs = {}
    for seed in (42, 43):
        task = work / f"sampled-{seed}.json"
        task.write_text(json.dumps(audio_doc("sampled-no-top-p", str(tiny_musicgen), seed=seed)))
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        procs[seed] = subprocess.Popen(
            [sys.executable, "-m", "harness.cli", "exec", str(task), "--threads", "1", "--out", str(work)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for seed, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        results[seed] = (work / f"sampled-{seed}.wav").read_bytes()
    return results


def test_harness_exec_is_the_runners_first_call(exec_seeds, patched_runners, runner_cwd, tiny_musicgen):
    from audio_task.cache.memory_impl import MemoryModelCache

    doc = audio_doc("sampled-no-top-p", str(tiny_musicgen))
    assert exec_seeds[42] == runner_wav(doc, MemoryModelCache())


def test_harness_exec_seeds_42_and_43_give_other_audio_without_top_p(exec_seeds):
    """The bar of the fidelity issue: a sampled task without top_p is not silently greedy."""
    assert exec_seeds[42] != exec_seeds[43]
