"""In-process executors for tests: the whole Executor protocol, no worker process, no torch.

Why a base here: the runner refuses an executor that lacks any method of
harness.execution.executor.Executor, so every test double implements all of it, with the
local executor's answers (this machine's slots, nothing to shut down) unless it says otherwise.
"""

from __future__ import annotations

import threading
from typing import Any

from harness.execution.executor import Job
from harness.execution.schedule import Slot, local_slot


class InProcessExecutor:
    """Subclasses define ``run``; ``stop`` only records that it was asked."""

    def __init__(self) -> None:
        self.stopped = threading.Event()

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
