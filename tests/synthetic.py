"""Synthetic test audio shared by the comparison, fingerprint and validator tests."""

from __future__ import annotations

import numpy as np

RATE = 16000


def music(seed: int, seconds: float = 1.0, rate: int = RATE, channels: int = 1) -> np.ndarray:
    """Non-stationary test audio: a few tones with random pitch, onset and level."""
    g = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = np.zeros_like(t)
    for _ in range(6):
        f, on, amp = g.uniform(80, 4000), g.uniform(0, seconds), g.uniform(0.05, 0.3)
        x += amp * np.sin(2 * np.pi * f * t) * np.exp(-((t - on) ** 2) / (0.05 * seconds))
    return np.repeat(x.astype(np.float32)[:, None], channels, axis=1)
