"""The one event loop that drives a worker, shared by every executor that starts workers.

Why shared: the local and Ray executors each had their own loop (start, timeout, a worker
that dies mid-cell, the cells after it going to a new worker) and their own ``stop()``, and
the two had drifted apart. Here an executor only says how to start a worker on some cells
(``launch``, returning an ``Attempt`` that yields the typed events of
harness.execution.protocol) and what to do when workers keep ending before running a cell
(``give_up``); timeouts, failures of the cell in flight, retries and stopping are decided
once, below.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from typing import Any, Protocol

from harness.execution.executor import Job, OnReady, OnRecord, failure
from harness.execution.protocol import CellPayload, Done, Event, Exit, Lost, Ready, RecordEvent, Refused, Start
from harness.store.records import Record

POLL_S = 0.25  # how often a waiting loop looks at stop() and the cell's deadline


class Attempt(Protocol):
    """One worker started on some of a job's cells (a local process, a Ray task)."""

    where: str  # said in reasons after "worker exited": "" locally, " on Ray node ... (address)"
    killed: str  # what ``kill`` did, said in a timeout's reason

    def next_event(self, timeout: float) -> Event | None:
        """The worker's next event, or None when none came within ``timeout`` seconds."""

    def land(self, event: RecordEvent) -> Record:
        """The record as the driver stores it (a fleet node's artifact is written here)."""

    def failure(self, cell: CellPayload, status: str, reason: str) -> dict[str, Any]:
        """The record of a cell this worker never reported (the node it was on, if known)."""

    def kill(self) -> None:
        """End the worker now (a timeout, stop()); safe to call more than once."""

    def close(self) -> None:
        """Once the attempt is over, however it ended: release what the worker held (a
        local process still running is killed; a Ray task that has said its last is left to
        clean up on its node)."""


class WorkerExecutor(ABC):
    """``run`` and ``stop`` of an executor whose jobs run in fresh workers. Subclasses define
    ``launch`` and the rest of harness.execution.executor.Executor."""

    patience = 1  # attempts in a row that run no cell before ``give_up``

    def __init__(self) -> None:
        self._stopped = threading.Event()
        self._live: set[Attempt] = set()  # several jobs may run at once (one thread each)
        self._guard = threading.Lock()

    @abstractmethod
    def launch(self, job: Job, cells: list[CellPayload]) -> Attempt | str:
        """A worker started on ``cells``, or why none can start (every cell is then recorded
        failed, with no node)."""

    def give_up(self, job: Job, cells: list[CellPayload], problem: str, attempt: Attempt, on_record: OnRecord) -> None:
        """Workers keep ending before running a cell: record the cells left as not run."""
        for cell in cells:
            on_record(attempt.failure(cell, "failed", f"not run: {problem}"))

    def stop(self) -> None:
        """End every live worker and start no more (an interrupt or another job's error)."""
        self._stopped.set()
        with self._guard:
            live = list(self._live)
        for attempt in live:
            attempt.kill()

    def run(self, job: Job, on_record: OnRecord, on_ready: OnReady) -> None:
        remaining = list(job.cells)
        fruitless = 0
        while remaining and not self._stopped.is_set():
            attempt = self.launch(job, remaining)
            if isinstance(attempt, str):
                for cell in remaining:
                    on_record({**failure(cell, "failed", attempt), "node": None})
                return
            with self._guard:
                self._live.add(attempt)
            before = len(remaining)
            try:
                remaining, problem = self._drive(job, attempt, remaining, on_record, on_ready)
            finally:
                attempt.close()
                with self._guard:
                    self._live.discard(attempt)
            fruitless = fruitless + 1 if len(remaining) == before else 0
            if remaining and problem and fruitless >= self.patience and not self._stopped.is_set():
                self.give_up(job, remaining, problem, attempt, on_record)
                return

    def _drive(
        self, job: Job, attempt: Attempt, remaining: list[CellPayload], on_record: OnRecord, on_ready: OnReady
    ) -> tuple[list[CellPayload], str | None]:
        """One worker's events, until it ends; returns the cells still to run and, when some
        are left, why the worker ended early."""
        # timeout_s = inf (valid TOML) means no timeout: a wait beyond TIMEOUT_MAX overflows
        limit = job.timeout_s if job.timeout_s < threading.TIMEOUT_MAX / 2 else None
        in_flight: CellPayload | None = None
        deadline: float | None = None
        where = attempt.where
        while True:
            if self._stopped.is_set():
                attempt.kill()
                return remaining, "stopped"
            wait = POLL_S if deadline is None else min(POLL_S, max(0.05, deadline - time.monotonic()))
            event = attempt.next_event(wait)
            if event is None:
                if in_flight is not None and deadline is not None and time.monotonic() >= deadline:
                    attempt.kill()
                    on_record(
                        attempt.failure(
                            in_flight, "timeout", f"timed out after {job.timeout_s:.0f} s{where}; {attempt.killed}"
                        )
                    )
                    return _after(remaining, in_flight), "timeout"
                continue
            if isinstance(event, Ready):
                on_ready(event)
            elif isinstance(event, Start):
                in_flight = next(c for c in remaining if c.cell_id == event.cell_id)
                deadline = None if limit is None else time.monotonic() + limit
            elif isinstance(event, RecordEvent):
                on_record(attempt.land(event))
                remaining = [c for c in remaining if c.cell_id != event.record.cell_id]
                in_flight, deadline = None, None
            elif isinstance(event, Done):
                continue  # the worker's exit follows (with its code and, on a fleet, its log)
            elif isinstance(event, Refused):
                reason = f"not run{where}: {event.reason}"
                for cell in remaining:
                    on_record(attempt.failure(cell, "failed", reason))
                return [], reason
            elif isinstance(event, Lost):
                if in_flight is None:
                    return remaining, event.reason
                on_record(attempt.failure(in_flight, "failed", event.reason))
                return _after(remaining, in_flight), event.reason
            elif isinstance(event, Exit):
                how = f"killed by signal {-event.code}" if event.code < 0 else f"exited with code {event.code}"
                if in_flight is not None:
                    on_record(attempt.failure(in_flight, "failed", f"worker {how}{where} while running this cell"))
                    return _after(remaining, in_flight), how
                if not remaining:
                    return [], None
                last = next((ln for ln in reversed(event.log_tail.splitlines()) if ln.strip()), "")
                return remaining, f"worker {how}{where}" + (f": {last[:300]}" if last else "")


def _after(remaining: list[CellPayload], cell: CellPayload) -> list[CellPayload]:
    """The cells after ``cell``: it was run (or lost) and is recorded."""
    return remaining[remaining.index(cell) + 1 :]
