"""What an engine returns: arrays + (for text) the response JSON, digests and timings.

Why one shape for every task kind: comparison, storage and reporting then need no
per-engine code. Conventions for ``arrays``:
  - ``waveform``: float32 (samples, channels) -- audio kinds
  - ``codes``: int64 (frames, codebooks) -- MusicGen EnCodec codes (the discrete output)
  - ``token_ids``: int64 (choices, new_tokens), padded with -1 -- text kinds
  - ``latents``: float32 (steps, ...) -- AudioLDM latents after each diffusion step
``discrete`` names the array whose equality is the "tokens" comparison level, and
``steps`` the array whose first axis is the generation step (for first divergence).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.digests import digest_array, digest_json

OUTPUT_DIGEST_KEY = "output"


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """The arrays as one ``.npz`` file, C order: how artifacts are kept and candidates travel
    to a worker (never pickled)."""
    buf = io.BytesIO()
    # numpy's stub lists allow_pickle among savez's keywords, so no **mapping of arrays matches it
    np.savez(buf, **{k: np.ascontiguousarray(v) for k, v in arrays.items()})  # type: ignore[arg-type]
    return buf.getvalue()


def npz_arrays(data: bytes) -> dict[str, np.ndarray]:
    """The arrays of ``npz_bytes``'s file; pickled objects are refused."""
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


@dataclass
class Output:
    kind: str  # audio | gpt | audioldm | chain
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    response: dict[str, Any] | None = None
    sampling_rate: int | None = None
    discrete: str | None = None
    steps: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def digests(self) -> dict[str, str]:
        """``output`` is the digest a validator would compare: the response JSON for text,
        the waveform for audio. Every array gets its own digest as well."""
        out = {name: digest_array(arr) for name, arr in sorted(self.arrays.items())}
        if self.response is not None:
            out["response"] = digest_json(self.response)
            out[OUTPUT_DIGEST_KEY] = out["response"]
        elif "waveform" in out:
            out[OUTPUT_DIGEST_KEY] = out["waveform"]
        if self.discrete and self.discrete in out:
            out["tokens"] = out[self.discrete]
        return out

    def describe(self) -> dict[str, Any]:
        """Small JSON-able facts for results.jsonl (no arrays)."""
        info: dict[str, Any] = dict(self.meta)
        wav = self.arrays.get("waveform")
        if wav is not None:
            info["samples"], info["channels"] = int(wav.shape[0]), int(wav.shape[1])
            if self.sampling_rate:
                info["audio_seconds"] = round(wav.shape[0] / self.sampling_rate, 6)
        if self.sampling_rate:
            info["sampling_rate"] = int(self.sampling_rate)
        if self.discrete and self.discrete in self.arrays:
            info["discrete_shape"] = list(self.arrays[self.discrete].shape)
        return info
