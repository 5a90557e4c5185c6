"""Engines on the real tiny models: reproducibility, seed sensitivity, threads, dtypes, quantization."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.engines.base import ModelCache
from harness.execution.execute import execute
from harness.spec.tasks import parse_task

pytestmark = pytest.mark.slow

MUSIC = {
    "model": "tiny:musicgen",
    "prompt": "80s pop track with bassy drums and synth",
    "seed": 42,
    "generation_config": {
        "max_new_tokens": 48,
        "do_sample": True,
        "top_k": 250,
        "top_p": 1.0,
        "temperature": 1.0,
        "guidance_scale": 3.0,
    },
}
GPT = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "I want to create a chat bot. Any suggestions?"}],
    "seed": 42,
    "generation_config": {"max_new_tokens": 20, "do_sample": True, "top_k": 20, "top_p": 1.0},
}


@pytest.fixture(scope="module")
def cache(tiny_musicgen, tiny_gpt2):
    return ModelCache(capacity=8)


def run(doc, cache, kind=None, **kw):
    task = parse_task(doc)
    return execute(task, kind or ("gpt" if "messages" in doc else "audio"), "cpu", cache, **kw).output


def test_tiny_models_are_bit_identical_and_cached(tmp_path, monkeypatch, tiny_musicgen, tiny_gpt2):
    from harness.models.tiny import ensure_tiny, tiny_info

    before = {n: tiny_info(n)["weights_sha256"] for n in ("musicgen", "gpt2")}
    monkeypatch.setenv("CONSENSUS_HARNESS_HOME", str(tmp_path))
    for name in ("musicgen", "gpt2"):
        path = ensure_tiny(name)
        assert str(path).startswith(str(tmp_path))
        assert tiny_info(name)["weights_sha256"] == before[name]
        assert sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) < 10_000_000


def test_different_codes_decode_to_different_audio(cache):
    import torch

    task = parse_task(MUSIC)
    loaded, _ = cache.get(__import__("harness.engines.musicgen", fromlist=["x"]).MusicgenEngine(), task, "cpu")
    model = loaded.objects["model"]
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 256, (1, 1, 4, 20), generator=g)
    b = torch.randint(0, 256, (1, 1, 4, 20), generator=g)
    with torch.no_grad():
        wa = model.audio_encoder.decode(a, [None]).audio_values
        wb = model.audio_encoder.decode(b, [None]).audio_values
    assert not torch.equal(wa, wb)
    assert float((wa - wb).abs().max()) > 1e-3


def test_same_task_twice_is_bitwise_and_other_seed_differs(cache):
    a, b = run(MUSIC, cache), run(MUSIC, cache)
    assert a.digests() == b.digests()
    c = run({**MUSIC, "seed": 7}, cache)
    assert c.digests()["tokens"] != a.digests()["tokens"]
    assert c.digests()["output"] != a.digests()["output"]
    ga, gb, gc = run(GPT, cache), run(GPT, cache), run({**GPT, "seed": 7}, cache)
    assert ga.digests()["output"] == gb.digests()["output"]
    assert gc.response != ga.response


def test_outputs_have_the_seed_formats(cache):
    audio = run(MUSIC, cache)
    wave = audio.arrays["waveform"]
    assert wave.dtype == np.float32 and wave.ndim == 2 and wave.shape[1] == 1
    assert audio.sampling_rate == 16000 and audio.arrays["codes"].shape[1] == 4
    assert np.isfinite(wave).all() and wave.std() > 1e-4
    text = run(GPT, cache).response
    assert set(text) == {"model", "choices", "usage"}
    choice = text["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = text["usage"]
    assert (
        usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
        and usage["completion_tokens"] <= 20
    )


def test_thread_count_keeps_codes(cache):
    one = run(MUSIC, cache, threads=1)
    two = run(MUSIC, cache, threads=2)
    assert one.digests()["tokens"] == two.digests()["tokens"]
    # floats may differ (FACTS.md: max abs 1.8e-7 here); when they do, they stay close
    assert np.abs(one.arrays["waveform"] - two.arrays["waveform"]).max() < 1e-3


@pytest.mark.parametrize(
    "patch",
    [{"dtype": "float16"}, {"dtype": "bfloat16"}, {"quantize_bits": 8}, {"quantize_bits": 4}],
    ids=["float16", "bfloat16", "8bit", "4bit"],
)
@pytest.mark.parametrize("base", [MUSIC, GPT], ids=["musicgen", "gpt2"])
def test_cheaper_configurations_run_and_reproduce(base, patch, cache):
    doc = {**base, **patch}
    a, b = run(doc, cache), run(doc, cache)
    assert a.digests() == b.digests()
    if "quantize_bits" in patch:
        loaded = cache.get(
            __import__("harness.engines.base", fromlist=["x"]).get_engine("gpt" if "messages" in doc else "audio"),
            parse_task(doc),
            "cpu",
        )[0]
        q = loaded.meta["quantization"]
        assert q["bits"] == patch["quantize_bits"] and q["quantized_layers"] > 0


def test_two_processes_give_identical_bytes(cli, tmp_path, tiny_musicgen, tiny_gpt2):
    from pathlib import Path

    root = Path(__file__).parent.parent.parent
    digests = []
    for i in range(2):
        out = tmp_path / f"p{i}"
        for task in ("tiny-musicgen-pop.json", "tiny-gpt2-chatbot.json"):
            res = cli("exec", str(root / "matrices" / "tasks" / task), "--out", str(out))
            assert res.returncode == 0, res.stderr
        digests.append({p.name: json.loads(p.read_text())["digests"] for p in sorted(out.glob("*.digests.json"))})
        assert (out / "tiny-musicgen-pop.wav").stat().st_size > 1000
        assert json.loads((out / "tiny-gpt2-chatbot.response.json").read_text())["model"] == "tiny:gpt2"
    assert digests[0] == digests[1] and len(digests[0]) == 2
    assert (tmp_path / "p0" / "tiny-gpt2-chatbot.response.json").read_bytes() == (
        tmp_path / "p1" / "tiny-gpt2-chatbot.response.json"
    ).read_bytes()


def test_unknown_model_is_one_clear_line(cli, tmp_path):
    task = tmp_path / "t.json"
    task.write_text(json.dumps({**MUSIC, "model": "nobody/no-such-model"}))
    res = cli("exec", str(task), "--out", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr.startswith("error: model 'nobody/no-such-model' is not in the local Hugging Face cache")
    assert "Traceback" not in res.stderr
