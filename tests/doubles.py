"""Test doubles loaded into workers through HARNESS_ENGINES (tests only)."""

from __future__ import annotations

import os

import numpy as np

from harness.engines.textgen import TextgenEngine


class NonDeterministicTextEngine(TextgenEngine):
    """The real text engine, then one token changed from an unseeded source: what a node
    with a non-deterministic kernel would return."""

    def run(self, loaded, task, device, neighbours=(), seeded=False):
        out = super().run(loaded, task, device, neighbours, seeded=seeded)
        ids = out.arrays["token_ids"].copy()
        rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
        col = int(rng.integers(0, ids.shape[1]))
        ids[0, col] = ids[0, col] + 1 + int(rng.integers(0, 200))  # never the same token
        out.arrays["token_ids"] = ids
        out.response = {
            **out.response,
            "choices": [
                {
                    **out.response["choices"][0],
                    "message": {"role": "assistant", "content": f"noise {rng.integers(1 << 30)}"},
                }
            ],
        }
        return out


def _unseeded() -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(os.urandom(8), "little"))


def _other_sound(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Another sound of the same shape and loudness (what a different prompt would give)."""
    noise = rng.standard_normal(wave.shape).astype(np.float32)
    return noise * np.float32(max(float(wave.std()), 1e-3))


class TextStageDivergingChain:
    """The real chain engine, then the text stage's tokens (and so everything after them)
    changed from an unseeded source: a divergence that begins in the text stage."""

    kind = "chain"

    def __init__(self):
        from harness.engines.chain import ChainEngine

        self.inner = ChainEngine()

    def load(self, task, device):
        return self.inner.load(task, device)

    def run(self, loaded, task, device, neighbours=(), seeded=False):
        out = self.inner.run(loaded, task, device, neighbours, seeded=seeded)
        rng = _unseeded()
        ids = out.arrays["text_token_ids"].copy()
        # never the same token, and two executions almost never the same change (0..200 made
        # both repeats equal once in 200 runs: tokens equal, sound different, "suspicious")
        ids[0, 0] = ids[0, 0] + 1 + int(rng.integers(0, 1 << 40))
        out.arrays["text_token_ids"] = ids
        out.arrays["waveform"] = _other_sound(out.arrays["waveform"], rng)
        out.response = {**out.response, "noise": int(rng.integers(1 << 30))}
        return out


class AudioStageDivergingChain(TextStageDivergingChain):
    """The text stage untouched; the audio stage's codes and sound changed: the divergence
    begins in the audio stage."""

    def run(self, loaded, task, device, neighbours=(), seeded=False):
        out = self.inner.run(loaded, task, device, neighbours, seeded=seeded)
        rng = _unseeded()
        codes = out.arrays["codes"].copy()
        # every frame's first code changed (never to itself): two executions agree on all of
        # them with probability 255**-frames, where one changed code agreed once in 255*frames
        codes[:, 0] = (codes[:, 0] + 1 + rng.integers(0, 255, size=codes.shape[0])) % 256
        out.arrays["codes"] = codes
        out.arrays["waveform"] = _other_sound(out.arrays["waveform"], rng)
        out.response = {**out.response, "noise": int(rng.integers(1 << 30))}
        return out


class _SecondCallInProcess:
    """Counts executions in this worker process: the planted change hits every second one
    (repeat r1 of each worker), so repeats in one process disagree."""

    calls = 0

    def _hit(self) -> bool:
        type(self).calls += 1
        return type(self).calls % 2 == 0


def _decode(loaded, codes: np.ndarray) -> np.ndarray:
    """Decode (frames, codebooks) EnCodec codes with the loaded model: (samples, channels)."""
    import torch

    model = loaded.objects["model"]
    with torch.inference_mode():
        t = torch.as_tensor(np.ascontiguousarray(codes.T))[None, None]  # (1, batch, codebooks, frames)
        audio = model.audio_encoder.decode(t, [None]).audio_values
    return np.ascontiguousarray(audio[0].detach().to("cpu", torch.float32).numpy().T)


class CodeAtStepMusicgen(_SecondCallInProcess):
    """The real MusicGen engine; on every second call in a process the code at step
    ``HARNESS_PLANT_STEP`` (codebook 0) is replaced and the audio re-decoded from the changed
    codes: a genuine single-code divergence at a known step."""

    kind = "audio"

    def __init__(self):
        from harness.engines.musicgen import MusicgenEngine

        self.inner = MusicgenEngine()

    def load(self, task, device):
        return self.inner.load(task, device)

    def run(self, loaded, task, device, neighbours=(), seeded=False):
        out = self.inner.run(loaded, task, device, neighbours, seeded=seeded)
        if self._hit():
            step = int(os.environ.get("HARNESS_PLANT_STEP", "3"))
            codes = out.arrays["codes"].copy()
            codes[step, 0] = (codes[step, 0] + 1) % 256
            out.arrays["codes"] = codes
            out.arrays["waveform"] = _decode(loaded, codes)
        return out


class WaveformSwapMusicgen(CodeAtStepMusicgen):
    """Honest codes, but every second call in a process returns other audio of the same
    length and loudness: a tampered (or non-deterministic) decode."""

    def run(self, loaded, task, device, neighbours=(), seeded=False):
        out = self.inner.run(loaded, task, device, neighbours, seeded=seeded)
        if self._hit():
            out.arrays["waveform"] = _other_sound(out.arrays["waveform"], np.random.default_rng(7))
        return out
