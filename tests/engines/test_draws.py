"""The sampler identity replay rests on, and what cannot be replayed (no model needed)."""

from __future__ import annotations

import pytest
import torch

from harness.engines.draws import (
    Draws,
    NotReplayable,
    decoding_problem,
    device_problem,
    pick,
    sampler_check,
    warm_state,
)


def _probs(rows: int = 4, vocab: int = 2048, seed: int = 0):
    return torch.softmax(torch.randn(rows, vocab, generator=torch.Generator().manual_seed(seed)) * 3, dim=-1)


def test_multinomial_is_argmax_of_p_over_exponential_draws():
    probs = _probs()
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        draws = Draws(warm_state(seed))
        for _ in range(4):
            assert torch.equal(
                torch.multinomial(probs, 1, generator=g).squeeze(1), pick(probs, draws.next(*probs.shape))
            )
    sampler_check()  # the run-time check agrees


def test_the_default_generator_after_set_seed_is_the_warm_state():
    from transformers import set_seed

    probs = _probs(seed=3)
    set_seed(42)
    taken = [torch.multinomial(probs, 1).squeeze(1) for _ in range(3)]
    draws = Draws(warm_state(42))
    assert all(torch.equal(t, pick(probs, draws.next(*probs.shape))) for t in taken)


def test_a_batch_draw_starts_with_the_single_task_draw():
    """A task run in a batch of B draws (B * rows, V) per step; its own rows are the first."""
    import numpy as np

    g = torch.Generator().manual_seed(5)
    full = [torch.empty(12, 256).exponential_(1, generator=g) for _ in range(3)]
    batched, alone = Draws(warm_state(5), rows_in_draw=12), Draws(warm_state(5))
    for step in range(3):
        assert torch.equal(batched.next(4, 256), full[step][:4])
    assert torch.equal(alone.next(4, 256), full[0][:4])
    assert not np.array_equal(alone.next(4, 256).numpy(), full[1][:4].numpy())  # the stream advanced by 12 rows


def test_draws_do_not_depend_on_the_thread_count():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = Draws(warm_state(3)).next(8, 100_000)
        torch.set_num_threads(2)
        b = Draws(warm_state(3)).next(8, 100_000)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(a, b)


def test_devices_and_decoding_modes_that_cannot_be_replayed():
    from transformers import GenerationConfig

    assert device_problem("cpu") is None
    assert "Philox" in device_problem("cuda:0")
    assert "greedy" in decoding_problem(GenerationConfig(do_sample=False))
    assert "beam" in decoding_problem(GenerationConfig(do_sample=True, num_beams=4))
    assert "stop strings" in decoding_problem(GenerationConfig(do_sample=True, stop_strings=["x"]))
    assert decoding_problem(GenerationConfig(do_sample=True, top_k=50, top_p=0.9)) is None
    assert issubclass(NotReplayable, ValueError)


def test_sampler_check_refuses_a_torch_that_samples_otherwise(monkeypatch):
    import harness.engines.draws as draws

    monkeypatch.setattr(draws, "_SAMPLER_OK", False)
    with pytest.raises(NotReplayable, match="multinomial"):
        draws.sampler_check()
