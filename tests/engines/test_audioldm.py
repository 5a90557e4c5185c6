"""AudioLDM end to end on the tiny seeded pipeline: real diffusers code, no mocks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.digests import digest_array
from harness.spec.tasks import AudioLDMTask

pytestmark = pytest.mark.slow

STEPS = 4
SECONDS = 2.0
PROMPT = "A classic cocktail lounge vibe with smooth jazz piano and a cool, relaxed atmosphere."
NEGATIVE = "low quality, average quality, muffled quality, noise interference"


def _task(**update) -> AudioLDMTask:
    fields = {
        "model": "tiny:audioldm",
        "prompt": PROMPT,
        "negative_prompt": NEGATIVE,
        "num_inference_steps": STEPS,
        "audio_length_in_s": SECONDS,
        "seed": 120,
    }
    fields.update(update)
    return AudioLDMTask(**fields)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    path = tmp_path_factory.mktemp("harness-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONSENSUS_HARNESS_HOME", str(path))
        yield path


@pytest.fixture(scope="module")
def engine_and_model(home):
    from harness.engines.base import get_engine

    engine = get_engine("audioldm")
    return engine, engine.load(_task(), "cpu")


@pytest.fixture(scope="module")
def reference(engine_and_model):
    engine, loaded = engine_and_model
    return engine.run(loaded, _task(), "cpu")


def test_build_is_bit_identical_across_homes(tmp_path, monkeypatch):
    from harness.models.tiny import ensure_tiny

    infos, files = [], []
    for name in ("a", "b"):
        monkeypatch.setenv("CONSENSUS_HARNESS_HOME", str(tmp_path / name))
        folder = ensure_tiny("audioldm")
        infos.append(json.loads((folder / "tiny-model.json").read_text()))
        files.append(
            {
                p.relative_to(folder).as_posix(): p.read_bytes()
                for p in sorted(folder.rglob("*"))
                if p.is_file() and p.suffix in (".json", ".txt")
            }
        )
        weights = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.safetensors"))
        assert weights == [
            "text_encoder/model.safetensors",
            "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors",
            "vocoder/model.safetensors",
        ]
        size = sum(p.stat().st_size for p in folder.rglob("*.safetensors"))
        assert size < 4_000_000, size
    assert infos[0]["weights_sha256"] == infos[1]["weights_sha256"]
    assert files[0] == files[1]  # configs, tokenizer and model_index are byte-identical too


def test_output_shape_and_latents(engine_and_model, reference):
    _, loaded = engine_and_model
    out = reference
    assert loaded.meta["sampling_rate"] == 16000
    assert loaded.meta["resolved_dtype"] == "float32"
    assert out.kind == "audioldm" and out.sampling_rate == 16000
    wave = out.arrays["waveform"]
    assert wave.dtype == np.float32 and wave.shape == (int(SECONDS * 16000), 1)
    assert np.isfinite(wave).all() and float(np.abs(wave).max()) > 0.0
    lat = out.arrays["latents"]
    assert lat.dtype == np.float32 and lat.ndim == 4 and lat.shape[0] == STEPS
    assert len(out.meta["timesteps"]) == STEPS
    assert not np.array_equal(lat[0], lat[-1])
    assert out.steps == "latents" and out.discrete is None
    assert out.digests()["output"] == digest_array(wave)
    assert set(out.timings) == {"encode_s", "generate_s", "decode_s"}
    assert out.meta["batch_size"] == 1


def test_same_seed_is_bitwise_identical(engine_and_model, reference):
    engine, loaded = engine_and_model
    again = engine.run(loaded, _task(), "cpu")
    assert digest_array(again.arrays["waveform"]) == digest_array(reference.arrays["waveform"])
    assert digest_array(again.arrays["latents"]) == digest_array(reference.arrays["latents"])


def test_different_seed_or_prompt_changes_audio(engine_and_model, reference):
    engine, loaded = engine_and_model
    ref = reference.arrays["waveform"]
    other_seed = engine.run(loaded, _task(seed=121), "cpu").arrays["waveform"]
    other_prompt = engine.run(loaded, _task(prompt="heavy rock guitar with loud drums"), "cpu").arrays["waveform"]
    assert digest_array(other_seed) != digest_array(ref)
    assert digest_array(other_prompt) != digest_array(ref)
    assert float(np.abs(other_prompt - ref).max()) > 1e-3  # the prompt matters, not just rounding


def test_batch_of_two_returns_the_target(engine_and_model, reference):
    engine, loaded = engine_and_model
    neighbour = _task(prompt="heavy rock guitar with loud drums", negative_prompt=None, seed=7)
    out = engine.run(loaded, _task(), "cpu", neighbours=[neighbour])
    wave = out.arrays["waveform"]
    assert wave.shape == (int(SECONDS * 16000), 1)
    assert out.arrays["latents"].shape == reference.arrays["latents"].shape
    assert out.meta["batch_size"] == 2
    # the target's audio (same noise and prompt as alone; batching may move the last bits)
    assert float(np.abs(wave - reference.arrays["waveform"]).max()) < 1e-3


def test_batch_must_share_length_and_steps(engine_and_model):
    engine, loaded = engine_and_model
    with pytest.raises(ValueError, match="num_inference_steps"):
        engine.run(loaded, _task(), "cpu", neighbours=[_task(num_inference_steps=STEPS + 1)])


@pytest.mark.parametrize("bits", [8, 4])
def test_quantization_on_cpu_is_refused(home, bits):
    from harness.engines.audioldm import AudioLDMEngine
    from harness.models.loading import UnsupportedConfiguration

    with pytest.raises(UnsupportedConfiguration, match="GPU"):
        AudioLDMEngine().load(_task(quantize_bits=bits), "cpu")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.gpu
@pytest.mark.skipif(not _cuda(), reason="needs CUDA")
@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_unet_on_cuda(home, bits):
    from harness.engines.audioldm import AudioLDMEngine

    engine = AudioLDMEngine()
    loaded = engine.load(_task(quantize_bits=bits), "cuda")
    report = loaded.meta["quantization"]
    assert report["bits"] == bits and report["quantized_layers"] > 0
    out = engine.run(loaded, _task(quantize_bits=bits), "cuda")
    assert out.arrays["waveform"].shape == (int(SECONDS * 16000), 1)
    assert np.isfinite(out.arrays["waveform"]).all()
