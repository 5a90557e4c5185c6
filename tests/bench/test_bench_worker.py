"""A worker process's start, as the runner pays it for every worker group: spawn to exit on an
empty job (python, the environment, torch, the fingerprint: the ``ready`` line is its last
step), and on one 8-token tiny MusicGen cell (plus transformers, the engine and the model load).
The job files are scripts/overhead.py's, so the figures match its ``worker start`` line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.conftest import ROOT, load_script

pytestmark = pytest.mark.bench


def _spawn(job: Path, text: str) -> None:
    job.write_text(text)  # the worker deletes its job file: written again every round
    subprocess.run(
        [sys.executable, "-m", "harness.execution.worker", str(job)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.benchmark(group="worker-start")
@pytest.mark.parametrize("cells", [0, 1], ids=["empty-job", "one-musicgen-cell"])
def test_worker_start(benchmark, tmp_path, tiny_musicgen, cells: int) -> None:
    text = load_script("overhead").worker_job(tmp_path, with_cell=bool(cells))
    benchmark.pedantic(_spawn, args=(tmp_path / "job.json", text), rounds=6, warmup_rounds=1, iterations=1)
    assert len(list(tmp_path.glob("artifacts/*"))) == cells
