"""Regenerate the random draws of a sampled decoding step from the generator's state.

Why: a node's sampled output is a function of the model's distributions and of the random
numbers the seed gives. The distributions differ a little between honest machines (float
reduction order, kernel sets, bfloat16 rounding); the random numbers do not. With the draws
regenerated, a validator can check every step of a candidate's output against its own
distributions and say how near each step came to picking another token.

How torch samples (ATen ``multinomial``, the ``n_sample == 1`` fast path; measured on torch
2.13 CPU and checked at run time by :func:`sampler_check`): ``torch.multinomial(p, 1,
generator=g)`` is ``argmax(p / E)`` with ``E = torch.empty_like(p).exponential_(1,
generator=g)``, the Gumbel-max trick in exponential form. One step of ``generate`` draws one
``E`` the shape of its probability matrix, ``(rows, vocab)``: every row of the batch (every
codebook for MusicGen, every returned sequence for text), whether or not that row's token is
kept afterwards (MusicGen's delay pattern overwrites the pad positions; a finished text row
gets the pad token). The stream is sequential: the first rows of a ``(B * r, V)`` draw equal
an ``(r, V)`` draw from the same state, so a task run in a batch of ``B`` is replayed with
``rows_in_draw = B * r`` and its own rows first. The draws do not depend on the thread count
or the CPU kernel set (``ATEN_CPU_CAPABILITY``, oneMKL and oneDNN caps: identical bytes).

What cannot be replayed this way:
  - CUDA: ``exponential_`` there runs on the GPU's Philox generator with offsets set by the
    launch grid, so the stream depends on the GPU model; a CPU validator cannot regenerate it;
  - greedy decoding (``do_sample=False``): it draws nothing, the token is the argmax;
  - beam search, contrastive, assisted and constrained decoding: other draws or none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from harness.errors import HarnessError

if TYPE_CHECKING:  # torch is imported where it is used: importing this module stays cheap
    import torch
    from transformers import GenerationConfig

#: how a validator may have started its generator: seeded just before generating (a node
#: serving from its model cache), or seeded before loading the model (a node's first task:
#: loading MusicGen draws from the generator)
STARTS = ("warm", "cold")


class NotReplayable(HarnessError, ValueError):
    """A task (or a torch) whose draws cannot be regenerated; the message says why."""


def generator_at(state: torch.Tensor) -> torch.Generator:
    """A CPU generator whose state is ``state`` (a ``torch.get_rng_state()`` tensor)."""
    import torch

    g = torch.Generator(device="cpu")
    g.set_state(state)
    return g


def warm_state(seed: int) -> torch.Tensor:
    """The CPU generator's state right after ``transformers.set_seed(seed)``."""
    import torch

    return torch.Generator(device="cpu").manual_seed(int(seed)).get_state()


class Draws:
    """The exponential draws a run's sampling steps consume, regenerated in order."""

    def __init__(self, state: torch.Tensor, rows_in_draw: int | None = None) -> None:
        self.generator = generator_at(state)
        self.rows_in_draw = rows_in_draw  # rows of generate's probability matrix (batch x rows)
        self.steps = 0

    def next(self, rows: int, vocab: int) -> torch.Tensor:
        """The next step's draw for ``rows`` rows (the first rows of a batch's draw)."""
        import torch

        total = max(rows, self.rows_in_draw or rows)
        e = torch.empty((total, vocab), dtype=torch.float32).exponential_(1, generator=self.generator)
        self.steps += 1
        return e[:rows]


def pick(probs: torch.Tensor, draws: torch.Tensor) -> torch.Tensor:
    """The token ``torch.multinomial(probs, 1)`` takes with these draws, per row."""
    import torch

    return torch.argmax(probs / draws, dim=-1)


_SAMPLER_OK: bool | None = None


def sampler_check() -> None:
    """Refuse to replay on a torch whose multinomial is not ``argmax(p / E)`` (checked once per
    process on 4 x 2048 rows over 8 steps; it holds on torch 2.x CPU)."""
    global _SAMPLER_OK
    if _SAMPLER_OK is None:
        import torch

        probs = torch.softmax(torch.randn(4, 2048, generator=torch.Generator().manual_seed(7)) * 3, dim=-1)
        a, b = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
        _SAMPLER_OK = all(
            bool(
                torch.equal(
                    torch.multinomial(probs, 1, generator=a).squeeze(1),
                    pick(probs, torch.empty_like(probs).exponential_(1, generator=b)),
                )
            )
            for _ in range(8)
        )
    if not _SAMPLER_OK:
        import torch

        raise NotReplayable(
            f"torch {torch.__version__}: multinomial does not draw argmax(p / Exp(1)) here, so the "
            f"seed's draws cannot be regenerated"
        )


def device_problem(device: str) -> str | None:
    """Why draws made on ``device`` cannot be regenerated here (None: CPU)."""
    if device == "cpu":
        return None
    if device.startswith("cuda"):
        return (
            "a CUDA run samples from the GPU's Philox generator, whose stream depends on the launch grid (the "
            "GPU model): a CPU validator cannot regenerate its draws"
        )
    return f"device {device}: only CPU draws are regenerated"


def decoding_problem(gen: GenerationConfig) -> str | None:
    """Why a resolved generation config's decoding draws nothing replayable (None: sampling)."""
    if getattr(gen, "num_beams", 1) not in (None, 1):
        return f"beam search (num_beams {gen.num_beams}) keeps several hypotheses per step; only sampling is replayed"
    for field, what in (
        ("penalty_alpha", "contrastive search"),
        ("assistant_model", "assisted decoding"),
        ("prompt_lookup_num_tokens", "prompt-lookup decoding"),
        ("force_words_ids", "constrained decoding"),
        ("max_time", "a time limit (max_time: where it stops depends on the machine's speed)"),
        ("stop_strings", "stop strings (the network's runner fails such tasks)"),
    ):
        if getattr(gen, field, None):
            return f"{what} is not replayed"
    if not getattr(gen, "do_sample", False):
        return (
            "greedy decoding (do_sample false) draws nothing from the seed, so there is nothing to regenerate; "
            "a greedy divergence is explained by its top-2 logit gap"
        )
    return None
