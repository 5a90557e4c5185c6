"""The worker's start: its environment is in place before torch starts, and the kernel
read-back memo answers only for the machine, library and switches it was read under."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import isa
from harness.execution import readback

ROOT = Path(__file__).resolve().parents[2]


def _spawn_worker(tmp_path: Path, **job: object) -> dict[str, object]:
    """The ready event of a real worker process started on an empty job."""
    path = tmp_path / "job.json"
    path.write_text(json.dumps({"run_dir": str(tmp_path), "profile": "on", "cells": [], **job}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CONSENSUS_HARNESS_HOME": str(tmp_path / "home")}
    for name in (*isa.KNOBS, "CUBLAS_WORKSPACE_CONFIG", isa.LEVEL_VARIABLE):
        env.pop(name, None)
    out = subprocess.run(
        [sys.executable, "-m", "harness.execution.worker", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    events = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    assert out.returncode == 0 and events and events[0]["event"] == "ready", out.stderr[-2000:]
    return events[0]


def test_importing_the_worker_does_not_start_torch():
    """run_job applies the environment first: nothing the worker module imports may start torch."""
    code = "import sys, harness.execution.worker; assert 'torch' not in sys.modules, 'torch started on import'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


@pytest.mark.skipif(isa.unavailable("avx2") is not None, reason="this CPU cannot run the avx2 level")
def test_the_kernel_level_is_set_before_torch_starts_with_or_without_the_memo(tmp_path):
    """ATen reads ATEN_CPU_CAPABILITY once, when torch starts: a worker asked for avx2 reports
    AVX2 kernels only if the variable was set before its import of torch. Run twice: the second
    worker answers oneDNN and oneMKL from the memo the first wrote, and says the same."""
    first = _spawn_worker(tmp_path, isa="avx2")["environment"]["kernels"]
    memo = list((tmp_path / "home" / "kernels").glob("*.json"))
    second = _spawn_worker(tmp_path, isa="avx2")["environment"]["kernels"]
    assert first["aten"] == "AVX2" and first["env"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert first["onednn"] is None or "AVX-512" not in first["onednn"]
    assert len(memo) == 1 and second == first
    native = _spawn_worker(tmp_path)["environment"]["kernels"]
    assert native["aten"] != "AVX2" or isa.cpu_flags() == frozenset({"avx2", "fma", "sse4_1"})
    assert len(list((tmp_path / "home" / "kernels").glob("*.json"))) == 2, "another level: another memo"


class FakeTorch:
    __version__ = "9.9.9"
    __file__ = str(ROOT / "harness" / "__init__.py")  # any real file stands in for the library


def test_the_memo_key_names_the_switches_and_the_library():
    a = readback.cache_key(FakeTorch, {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "PATH": "/bin"})
    b = readback.cache_key(FakeTorch, {"MKL_ENABLE_INSTRUCTIONS": "AVX512", "PATH": "/usr/bin"})
    assert a["switches"] == {"MKL_ENABLE_INSTRUCTIONS": "AVX2"} and a != b
    assert readback.cache_key(FakeTorch, {"MKL_VERBOSE": "1"})["switches"] == {}, "the probe's own switch"
    assert a["library"]["torch"] == "9.9.9"


def test_the_memo_reads_once_retries_a_failure_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSENSUS_HARNESS_HOME", str(tmp_path))
    monkeypatch.delenv(readback.OFF_VARIABLE, raising=False)
    key = readback.cache_key(FakeTorch, {})
    reads: list[str] = []

    def read(value: str | None):
        def inner() -> str | None:
            reads.append(str(value))
            return value

        return inner

    assert readback.remembered(key, "blas", read(None)) is None
    assert readback.remembered(key, "blas", read("AVX2")) == "AVX2"
    assert readback.remembered(key, "blas", read("other")) == "AVX2"
    assert readback.remembered(key, "onednn", read("isa:x")) == "isa:x"
    assert readback.remembered(key, "blas", read("other")) == "AVX2", "a second name keeps the first"
    assert reads == ["None", "AVX2", "isa:x"]
    readback.cache_path(key).write_text("{not json")
    assert readback.remembered(key, "blas", read("again")) == "again", "a broken memo is read afresh"
    monkeypatch.setenv(readback.OFF_VARIABLE, "0")
    assert readback.remembered(key, "blas", read("live")) == "live"
