"""The GPU proof's sampling step, rehearsed on the CPU: the answers are measured, and on the CPU
(where the replay rule is known to hold) every one must be yes; a planted generator that is not
the one generate used must show as draws that do not predict the picks."""

from __future__ import annotations

import json
import subprocess
import sys

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
    records = []
    for n in (1, 2):  # as the proof script does: each recording a fresh process
        path = tmp_path / f"record-{n}.json"
        cmd = [sys.executable, "-m", "harness.workflows.gpu_sampling", "record", "--device", "cpu", "--json", str(path)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=600)
        records.append(json.loads(path.read_text()))
    doc = gpu_sampling.measure("cpu", records)
    gen = doc["generate"]
    assert "error" not in gen, gen
    assert gen["steps"] == 64 and gen["rows"] == 256  # 64 tokens, 4 codebooks (guidance folded in)
    assert gen["predicted"] == gen["rows"]
    assert doc["processes_identical"] is True
    doc["replay"] = "ACCEPTED: ..."
    lines = gpu_sampling.render(doc)
    assert "predict 256/256 sampled rows over 64 steps" in lines[1]
    assert "byte-identical" in lines[2] and lines[3].endswith("ACCEPTED: ...")


def test_a_missing_record_is_said_not_compared(tmp_path):
    doc = gpu_sampling.measure("cpu", [gpu_sampling._read_record(tmp_path / "absent.json")])
    assert doc["processes_identical"] is False and "error" in doc["generate"]
    assert doc["second_process"] == {"error": "not recorded"}
    assert gpu_sampling.render(doc)[1].startswith("- seeded generation: ")
