"""The local executor: one ``python -m harness.execution.worker`` process per job attempt.

Why a fresh process: the determinism environment (harness.determinism, the kernel level of
harness.isa) must be in place before torch starts, so a worker is never reused across
profiles. The worker's typed events come back on its stdout, a private pipe; its stderr goes
to a log in the run directory. A worker that crashes or times out is replaced by a new one
for the cells after it (harness.execution.loop decides that, for every executor).
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.execution.executor import Job, OnRecord, failure, worker_label
from harness.execution.loop import Attempt, WorkerExecutor
from harness.execution.protocol import CellPayload, Event, Exit, RecordEvent, WorkerJob, parse_event
from harness.execution.schedule import Slot, local_slot
from harness.execution.stacks import with_path
from harness.hubenv import apply_library_env
from harness.store.records import Record


class WorkerStartError(HarnessError, RuntimeError):
    """A local worker ended before running any cell (its log in the run directory says why)."""


class LocalProcessExecutor(WorkerExecutor):
    """Workers are processes on this machine; restarted after a crash or timeout."""

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None):
        super().__init__()
        self.python = python or sys.executable
        self.env = env

    def devices(self) -> list[str]:
        from harness.spec.matrix import available_devices

        return available_devices()

    def slot(self, job: Job, parallel: int) -> Slot:
        return local_slot(job, parallel)

    def describe(self) -> dict[str, Any]:
        return {"executor": "local"}

    def shutdown(self) -> None:
        """Nothing is held between runs: every worker ended with its job."""

    def give_up(self, job: Job, cells: list[CellPayload], problem: str, attempt: Attempt, on_record: OnRecord) -> None:
        """On one machine a worker that cannot start will not start next time either: the
        run ends with the reason instead of failing every cell."""
        raise WorkerStartError(f"{problem} before starting; see its log in {job.run_dir}")

    def launch(self, job: Job, cells: list[CellPayload]) -> Attempt:
        fd, path = tempfile.mkstemp(prefix="job-", suffix=".json", dir=job.run_dir)
        with os.fdopen(fd, "w") as fh:
            fh.write(
                WorkerJob(
                    run_dir=job.run_dir,
                    profile=job.profile,
                    cells=cells,
                    parent_pid=os.getpid(),
                    isa=job.isa,
                    tf32=job.tf32,
                    stack=job.stack,
                ).model_dump_json()
            )
        env = with_path(dict(os.environ if self.env is None else self.env), job.pythonpath)  # a stack's overlay
        apply_library_env(env)
        if job.cores_shared:
            # OpenMP threads spin while they wait; with two workers on two cores each spinning
            # thread takes a core from the other's compute (the smoke matrix ran 10x slower at
            # --parallel 2). Passive waiting changes no result, only how idle threads wait.
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        # the worker's log stays open for the process's life; closed when the attempt ends
        log = open(Path(job.run_dir) / f"worker-{worker_label(job)}.log", "ab")  # noqa: SIM115
        try:
            proc = subprocess.Popen(
                [job.python or self.python, "-m", "harness.execution.worker", path],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        except OSError:
            _unlink(path)
            raise
        finally:
            log.close()
        return LocalAttempt(proc, path)


class LocalAttempt:
    """A worker process: its pipe read on a thread into a queue, so waits can time out."""

    where = ""
    killed = "worker killed"

    def __init__(self, proc: subprocess.Popen[bytes], job_file: str):
        self.proc = proc
        self.job_file = job_file
        self.events: queue.Queue[Event | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = parse_event(line)
            if event is not None:
                self.events.put(event)
        self.events.put(None)  # the pipe closed: the worker exited

    def next_event(self, timeout: float) -> Event | None:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            return None
        if event is None:
            self.events.put(None)  # asked again, the answer stays the same
            return Exit(code=self.proc.wait())
        return event

    def land(self, event: RecordEvent) -> Record:
        return event.record  # the worker wrote its artifact into the run directory itself

    def failure(self, cell: CellPayload, status: str, reason: str) -> dict[str, Any]:
        return failure(cell, status, reason)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        _unlink(self.job_file)


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
