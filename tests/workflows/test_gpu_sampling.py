"""The GPU proof's sampling step, rehearsed on the CPU: the answers are measured, and on the CPU
(where the replay rule is known to hold) every one must be yes; a planted generator that is not
the one generate used must show as draws that do not predict the picks."""

from __future__ import annotations

import pytest

from harness.workflows import gpu_sampling


def test_kernel_check_counts_every_row_on_the_cpu():
    doc = gpu_sampling.kernel_check("cpu")
    assert doc["equal"] is True
    assert [(s["rows"], s["vocab"]) for s in doc["shapes"]] == list(gpu_sampling.KERNEL_SHAPES)
    assert all(s["equal"] == s["of"] == s["rows"] * gpu_sampling.KERNEL_STEPS for s in doc["shapes"])


def test_kernel_check_sees_draws_from_another_state(monkeypatch):
    """Regenerated draws from another seed must not pass as equal: the check can fail."""
    real = gpu_sampling._generator
    calls = iter(range(1000))
    monkeypatch.setattr(gpu_sampling, "_generator", lambda device, seed: real(device, seed + next(calls) % 2))
    doc = gpu_sampling.kernel_check("cpu")
    assert doc["equal"] is False and any(s["equal"] < s["of"] for s in doc["shapes"])


@pytest.mark.slow
def test_rehearsal_on_the_cpu_predicts_every_pick_in_two_processes(tmp_path):
    doc = gpu_sampling.measure("cpu")
    gen = doc["generate"]
    assert "error" not in gen, gen
    assert gen["steps"] == 64 and gen["rows"] == 256  # 64 tokens, 4 codebooks (guidance folded in)
    assert gen["predicted"] == gen["rows"]
    assert doc["processes_identical"] is True
    doc["replay"] = "ACCEPTED: ..."
    lines = gpu_sampling.render(doc)
    assert "predict 256/256 sampled rows over 64 steps" in lines[1]
    assert "byte-identical" in lines[2] and lines[3].endswith("ACCEPTED: ...")
