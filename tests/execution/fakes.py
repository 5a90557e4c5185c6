"""In-process executors for tests: the whole Executor protocol, no worker process, no torch.

Why a base here: the runner refuses an executor that lacks any method of
harness.execution.executor.Executor, so every test double implements all of it, with the
local executor's answers (this machine's slots, nothing to shut down) unless it says otherwise.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from harness.execution.executor import Job
from harness.execution.protocol import CellPayload, Ready
from harness.execution.schedule import Slot, local_slot


class InProcessExecutor:
    """Each cell's record is ``outcome(cell)`` (default: ok with a made-up digest), made here
    on the calling thread; ``stop`` only records that it was asked."""

    def __init__(self, outcome: Callable[[CellPayload], dict[str, Any]] | None = None) -> None:
        self.stopped = threading.Event()
        self.jobs: list[Job] = []
        self.outcome = outcome or (lambda cell: {"status": "ok", "digests": {"output": "d" * 64}})

    def run(self, job: Job, on_record, on_ready) -> None:
        self.jobs.append(job)
        on_ready(Ready(pid=os.getpid(), environment={"executor": "fake"}))
        for cell in job.cells:
            on_record({**cell.identity(), **self.outcome(cell), "finished_at": time.time()})

    def devices(self) -> list[str]:
        return ["cpu"]

    def slot(self, job: Job, parallel: int) -> Slot:
        return local_slot(job, parallel)

    def stop(self) -> None:
        self.stopped.set()

    def describe(self) -> dict[str, Any]:
        return {"executor": type(self).__name__}

    def shutdown(self) -> None:
        """Nothing is held between runs."""
