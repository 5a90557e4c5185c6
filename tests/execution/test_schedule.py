"""Parallel scheduling: slots per device, a single writer, errors stop every job.

The scheduling is tested with an in-process executor (the real worker processes are covered
by the runner tests and by a --parallel 2 run on the tiny models); ``device = "all"`` on a
machine with N GPUs is emulated by the executor reporting N CUDA devices.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from harness.execution.executor import Job
from harness.execution.protocol import Ready
from harness.execution.runner import run_matrix
from harness.execution.schedule import Slot, local_slot, run_jobs
from harness.spec.matrix import matrix_from_doc
from tests.execution.fakes import InProcessExecutor

GPT_TASK = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "hello world"}],
    "seed": 1,
    "generation_config": {"max_new_tokens": 8, "do_sample": False},
}


@dataclass
class FakeJob:
    device: str
    name: str


class Recorder:
    """Counts how many jobs run at once, overall and per slot, and whether callbacks overlap."""

    def __init__(self, hold_s: float = 0.15):
        self.hold_s = hold_s
        self.guard = threading.Lock()
        self.now: Counter = Counter()
        self.most: Counter = Counter()
        self.in_callback = 0
        self.callback_overlap = False
        self.records: list[str] = []

    def run(self, job, on_record, on_ready):
        key = job.device
        with self.guard:
            self.now[key] += 1
            self.now["all"] += 1
            self.most[key] = max(self.most[key], self.now[key])
            self.most["all"] = max(self.most["all"], self.now["all"])
        try:
            time.sleep(self.hold_s)
            on_ready({"event": "ready"})
            on_record({"cell_id": job.name})
        finally:
            with self.guard:
                self.now[key] -= 1
                self.now["all"] -= 1

    def on_record(self, record):
        self.in_callback += 1
        if self.in_callback > 1:
            self.callback_overlap = True
        time.sleep(0.01)  # widen the window a concurrent call would need
        self.records.append(record["cell_id"])
        self.in_callback -= 1


def test_one_worker_per_gpu_and_parallel_cpu_workers():
    jobs = [FakeJob(d, f"{d}-{i}") for d in ("cpu", "cuda:0", "cuda:1", "cuda:2", "cuda:3") for i in range(3)]
    rec = Recorder()
    stats = run_jobs(jobs, rec.run, lambda j: local_slot(j, 2), rec.on_record, lambda e: None)
    assert sorted(rec.records) == sorted(j.name for j in jobs)
    assert all(rec.most[f"cuda:{i}"] == 1 for i in range(4)), rec.most  # never two workers on one GPU
    assert rec.most["cpu"] == 2  # --parallel 2 on the CPU
    assert rec.most["all"] == stats.max_concurrent == 6  # 4 GPUs + 2 CPU workers side by side
    assert not rec.callback_overlap  # the store keeps a single writer


def test_default_cpu_parallelism_is_one():
    jobs = [FakeJob("cpu", f"cpu-{i}") for i in range(3)]
    rec = Recorder(hold_s=0.05)
    stats = run_jobs(jobs, rec.run, lambda j: local_slot(j, 1), rec.on_record, lambda e: None)
    assert stats.max_concurrent == 1 and rec.records == ["cpu-0", "cpu-1", "cpu-2"]  # in order, one at a time


def test_an_error_in_one_job_stops_the_others_and_nothing_more_is_written():
    stopped = threading.Event()
    written: list[str] = []

    def run(job, on_record, on_ready):
        if job.name == "bad":
            raise OSError("disk full")
        stopped.wait(5)  # a live worker, until stop() ends it
        on_record({"cell_id": job.name})  # after stop: must not reach the store

    jobs = [FakeJob("cuda:0", "slow"), FakeJob("cuda:1", "bad")]
    with pytest.raises(OSError, match="disk full"):
        run_jobs(
            jobs,
            run,
            lambda j: local_slot(j, 1),
            lambda r: written.append(r["cell_id"]),
            lambda e: None,
            stop=stopped.set,
        )
    assert stopped.is_set() and written == []


def test_an_executor_may_bring_its_own_slots():
    jobs = [FakeJob("cpu", f"j{i}") for i in range(4)]
    rec = Recorder(hold_s=0.1)
    stats = run_jobs(jobs, rec.run, lambda j: Slot("cluster", 100), rec.on_record, lambda e: None)
    assert stats.max_concurrent == 4


class FakeGpuExecutor(InProcessExecutor):
    """In-process executor on a pretend machine with 4 GPUs: each job 'runs' for a moment and
    reports one skipped record per cell, so run_matrix's whole path (expansion of device =
    "all", jobs, slots, node stamping, manifest) runs without torch."""

    def __init__(self):
        super().__init__()
        self.rec = Recorder(hold_s=0.2)

    def devices(self):
        return ["cpu", "cuda:0", "cuda:1", "cuda:2", "cuda:3"]

    def run(self, job: Job, on_record, on_ready):
        def emit(_):
            for cell in job.cells:
                on_record(
                    {
                        **cell.identity(),
                        "status": "skipped",
                        "reason": "fake",
                        "worker_pid": 1,
                        "finished_at": time.time(),
                    }
                )

        self.rec.run(FakeJob(job.device, job.device), emit, lambda _: on_ready(Ready(pid=1)))


def test_device_all_with_four_gpus_runs_four_gpu_workers_at_once(tmp_path: Path):
    matrix = matrix_from_doc(
        {
            "name": "allgpu",
            "repeats": 1,
            "workers": 1,
            "tasks": [{"name": "gpt", "task": GPT_TASK}],
            "axes": {"device": ["all"], "seed": [1, 2]},
        }
    )
    executor = FakeGpuExecutor()
    summary = run_matrix(matrix, tmp_path / "run", progress=False, executor=executor)
    assert summary.executed == 10  # 2 seeds x (cpu + 4 GPUs)
    assert executor.rec.most["all"] == 5 and all(executor.rec.most[f"cuda:{i}"] == 1 for i in range(4))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    session = manifest["execution"][-1]
    assert session["max_concurrent_workers"] == 5 and session["parallel"] == 1 and session["jobs"] == 5
    records = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert {r["axes"]["device"] for r in records} == {"cpu", "cuda:0", "cuda:1", "cuda:2", "cuda:3"}
    assert all(r["node"]["key"] for r in records)  # every record names the node that ran it


def test_parallel_is_not_part_of_what_a_resumed_run_must_match(tmp_path: Path):
    from harness.execution.runner import matrix_digest_of

    doc = {"name": "p", "tasks": [{"name": "gpt", "task": GPT_TASK}]}
    assert matrix_digest_of(matrix_from_doc(doc)) == matrix_digest_of(matrix_from_doc({**doc, "parallel": 2}))
    assert matrix_digest_of(matrix_from_doc(doc)) != matrix_digest_of(matrix_from_doc({**doc, "repeats": 3}))


@pytest.mark.parametrize("value", [0, 65, "2", True])
def test_bad_parallel_is_refused(value):
    from harness.spec.matrix import MatrixError

    with pytest.raises(MatrixError, match="parallel"):
        matrix_from_doc({"name": "p", "parallel": value, "tasks": [{"name": "gpt", "task": GPT_TASK}]})


@pytest.mark.parametrize("parallel, workers, passive", [(2, 2, True), (1, 2, False), (2, 1, False)])
def test_workers_sharing_cores_wait_passively(tmp_path: Path, monkeypatch, parallel, workers, passive):
    """Spinning OpenMP threads of two workers on two cores made --parallel 2 ten times slower
    than --parallel 1 (smoke cut: 201 s vs 19 s; with passive waiting 10 s). The worker is
    stood in for by a script that writes the environment it was started with."""
    from harness.execution.local import LocalProcessExecutor

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\nenv > "$(dirname "$3")/env-$$.txt"; sleep 1\n')
    fake.chmod(0o755)
    matrix = matrix_from_doc(
        {"name": "omp", "repeats": 1, "workers": workers, "tasks": [{"name": "gpt", "task": GPT_TASK}]}
    )
    with pytest.raises(RuntimeError, match="before starting"):  # the stand-in never starts a cell
        run_matrix(
            matrix, tmp_path / "run", progress=False, executor=LocalProcessExecutor(python=str(fake)), parallel=parallel
        )
    envs = [p.read_text() for p in (tmp_path / "run").glob("env-*.txt")]
    assert len(envs) == min(workers, parallel)  # the first job's error stops those not yet started
    assert all(("OMP_WAIT_POLICY=PASSIVE" in e) == passive for e in envs)
