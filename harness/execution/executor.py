"""What an executor is: the job it is given and every method the runner calls on it.

Why one protocol: the runner used to declare only ``run`` and probe for the rest with
``getattr`` (devices, slot, stop, describe), so an executor missing one silently took a
default (the driver's GPUs instead of the fleet's, no way to stop its workers). Now an
executor implements all of ``Executor``, and one that does not is refused before a run
directory exists, with one line naming what it lacks. The local and Ray executors share
the event loop that drives a worker (harness.execution.loop); they are named in
harness.execution.executors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from harness.errors import HarnessError
from harness.execution.protocol import CellPayload, Ready
from harness.execution.schedule import Slot
from harness.store.records import Record
from harness.vocabulary import CURRENT_STACK


class ExecutorError(HarnessError, TypeError):
    """An object given as an executor that does not implement the whole ``Executor``."""


@dataclass
class Job:
    run_dir: str
    device: str
    profile: str
    worker: int
    cells: list[CellPayload]
    timeout_s: float
    cores_shared: bool = False  # other CPU workers may run beside this one (--parallel > 1)
    isa: str = "native"  # the CPU kernel set of every cell of the job (a worker's is fixed at start)
    tf32: str = "off"
    stack: str = CURRENT_STACK  # the software stack its worker starts under (harness.execution.stacks)
    python: str | None = None  # that stack's interpreter (None: the executor's own)
    pythonpath: tuple[str, ...] = ()  # that stack's folders, put in front of PYTHONPATH


OnRecord = Callable[[Record | dict[str, Any]], None]
OnReady = Callable[[Ready], None]


class Executor(Protocol):
    """Runs jobs in fresh workers. ``run`` may be called from several threads at once; the
    callbacks it is given are serialised by the scheduler (harness.execution.schedule)."""

    def run(self, job: Job, on_record: OnRecord, on_ready: OnReady) -> None:
        """Run the job's cells; report each final record (a Record, or the dict of a failure
        the executor itself observed) and each worker's ``Ready``."""

    def devices(self) -> list[str]:
        """The devices a cell may ask for: this machine's, or a fleet's."""

    def slot(self, job: Job, parallel: int) -> Slot:
        """Which jobs may run at once (harness.execution.schedule.local_slot on one machine)."""

    def stop(self) -> None:
        """End every live worker and start no more (an interrupt, another job's error)."""

    def describe(self) -> dict[str, Any]:
        """What the manifest's ``execution`` entry records about this executor."""

    def shutdown(self) -> None:
        """Release what the executor holds once the run is over (a Ray instance it started)."""


EXECUTOR_METHODS = tuple(name for name, value in vars(Executor).items() if callable(value) and not name.startswith("_"))


def require_executor(executor: Any) -> Executor:
    """``executor``, or ExecutorError naming the methods of ``Executor`` it lacks."""
    missing = [name for name in EXECUTOR_METHODS if not callable(getattr(executor, name, None))]
    if missing:
        raise ExecutorError(
            f"executor {type(executor).__name__} lacks {', '.join(f'{m}()' for m in missing)}; "
            f"an executor implements {', '.join(EXECUTOR_METHODS)}"
        )
    checked: Executor = executor
    return checked


def failure(cell: CellPayload, status: str, reason: str) -> dict[str, Any]:
    """The record of a cell that ended without its worker's record (timeout, crash, refusal)."""
    return {**cell.identity(), "status": status, "reason": reason, "finished_at": time.time()}


def worker_label(job: Job) -> str:
    """``cpu-on-w0``, ``cpu-on-isa-avx2-w1``, ``cpu-on-stack-t524-w0``: a job's worker, in log names."""
    kernels = (f"-isa-{job.isa}" if job.isa != "native" else "") + ("-tf32" if job.tf32 == "on" else "")
    kernels += f"-stack-{job.stack}" if job.stack != CURRENT_STACK else ""
    return f"{job.device.replace(':', '')}-{job.profile}{kernels}-w{job.worker}"
