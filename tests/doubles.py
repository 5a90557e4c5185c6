"""Test doubles loaded into workers through HARNESS_ENGINES (tests only)."""

from __future__ import annotations

import os

import numpy as np

from harness.engines.textgen import TextgenEngine


class NonDeterministicTextEngine(TextgenEngine):
    """The real text engine, then one token changed from an unseeded source: what a node
    with a non-deterministic kernel would return."""

    def run(self, loaded, task, device, neighbours=()):
        out = super().run(loaded, task, device, neighbours)
        ids = out.arrays["token_ids"].copy()
        rng = np.random.default_rng(int.from_bytes(os.urandom(8), "little"))
        ids[0, int(rng.integers(0, ids.shape[1]))] = int(rng.integers(0, 200))
        out.arrays["token_ids"] = ids
        out.response = {**out.response, "choices": [{**out.response["choices"][0], "message": {
            "role": "assistant", "content": f"noise {rng.integers(1 << 30)}"}}]}
        return out
