"""The seeded building blocks every tiny model shares: the seed, the fixed word list, the
PCG64 weight fill and the untrained byte-level BPE.

Why its own module: both tiny builders (``models.tiny`` for MusicGen and GPT-2,
``models.tiny_audioldm`` for AudioLDM) use them, and ``models.tiny`` registers the AudioLDM
builder; with the blocks here neither builder module imports the other's helpers (no
import circle).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:  # torch is imported where it is used
    import torch

TINY_SEED = 20261122

_WORDS = [
    "a",
    "the",
    "and",
    "with",
    "of",
    "in",
    "on",
    "for",
    "to",
    "is",
    "it",
    "this",
    "that",
    "music",
    "song",
    "track",
    "pop",
    "rock",
    "jazz",
    "blues",
    "piano",
    "guitar",
    "drums",
    "bass",
    "synth",
    "saxophone",
    "violin",
    "beat",
    "slow",
    "fast",
    "loud",
    "soft",
    "calm",
    "happy",
    "sad",
    "dark",
    "bright",
    "classic",
    "cocktail",
    "lounge",
    "vibe",
    "smooth",
    "cool",
    "relaxed",
    "atmosphere",
    "groovy",
    "heavy",
    "80s",
    "90s",
    "electronic",
    "dance",
    "night",
    "club",
    "crowd",
    "lights",
    "energy",
    "rhythm",
    "scene",
    "melody",
    "chord",
    "i",
    "want",
    "create",
    "chat",
    "bot",
    "any",
    "suggestions",
    "you",
    "can",
    "use",
    "hello",
    "world",
    "write",
    "describe",
    "image",
]


def seeded_fill(module: torch.nn.Module, seed: int, extra_buffers: Callable[[str], bool] = lambda n: False) -> None:
    """Overwrite every float parameter (and selected buffers) from a numpy PCG64 stream.

    Scale follows fan-in so activations stay O(1); 1-D weights (norm scales) sit near 1
    and biases near 0, which keeps the tiny networks' outputs varied, not saturated.
    """
    import torch

    rng = np.random.default_rng(seed)
    tensors: dict[str, torch.Tensor] = dict(module.named_parameters())
    tensors.update({n: b for n, b in module.named_buffers() if extra_buffers(n)})
    with torch.no_grad():
        for name in sorted(tensors):
            t = tensors[name]
            if not t.dtype.is_floating_point:
                continue
            noise = rng.standard_normal(tuple(t.shape), dtype=np.float32)
            values: npt.NDArray[np.floating[Any]]
            if extra_buffers(name):
                values = noise
            elif t.ndim == 1 and name.endswith("bias"):
                values = 0.02 * noise
            elif t.ndim == 1:
                values = 1.0 + 0.05 * noise
            else:
                fan_in = int(np.prod(t.shape[1:])) or 1
                values = noise / np.sqrt(fan_in)
            t.copy_(torch.from_numpy(values).to(t.dtype))


def byte_level_bpe(
    words: Iterable[str], specials: tuple[str, ...] = ()
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE without training: ``specials`` first, the 256 byte symbols, then
    deterministic merges that build each fixed word left to right (every merge's parts are
    already tokens). A trained tokenizer is not byte-reproducible; this one is."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {s: i for i, s in enumerate(specials)}
    for sym in sorted(ByteLevel.alphabet()):
        vocab[sym] = len(vocab)
    merges: list[tuple[str, str]] = []
    for word in dict.fromkeys(words):
        for piece in ("Ġ" + word, word):
            cur = piece[0]
            for ch in piece[1:]:
                nxt = cur + ch
                if nxt not in vocab:
                    merges.append((cur, ch))
                    vocab[nxt] = len(vocab)
                cur = nxt
    return vocab, merges
