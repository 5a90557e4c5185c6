"""Run worker jobs at the same time where the hardware allows it, keeping a single writer.

Why: a node with 8 GPUs used to run one worker at a time. Each job is still one fresh worker
process (the determinism environment is set before torch starts), but jobs run side by side
when their *slots* allow: one worker per CUDA device, and on the CPU up to ``parallel``
workers (default 1, because workers sharing cores perturb each other's timings; outputs are
unaffected, the thread count of each cell is pinned). An executor may define its own slots:
Ray places jobs by the resources they ask for, so every job is handed to it at once.

Records and ready events arrive on the job threads; they are passed on under one lock, so
the caller's callbacks (the store's append, the manifest update) never run concurrently:
the driver stays the only writer. After an interrupt or an error nothing more is passed on,
live workers are stopped, and the exception reaches the caller.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Protocol, TypeVar

UNBOUNDED = 1 << 20


@dataclass(frozen=True)
class Slot:
    """Jobs with the same ``key`` share ``capacity`` places (e.g. ``cpu``/2, ``cuda:1``/1)."""

    key: str
    capacity: int


class JobLike(Protocol):
    device: str


def local_slot(job: JobLike, parallel: int) -> Slot:
    """One worker per CUDA device at a time; on the CPU up to ``parallel``."""
    if job.device == "cpu":
        return Slot("cpu", max(1, parallel))
    return Slot(job.device, 1)


@dataclass
class ScheduleStats:
    jobs: int = 0
    max_concurrent: int = 0  # the most jobs that really ran at once


J = TypeVar("J")  # a job, as the executor knows it
R = TypeVar("R")  # a record (or the failure the executor saw instead)
E = TypeVar("E")  # a worker's ready event


def run_jobs(
    jobs: Sequence[J],
    run_one: Callable[[J, Callable[[R], None], Callable[[E], None]], None],
    slot_of: Callable[[J], Slot],
    on_record: Callable[[R], None],
    on_ready: Callable[[E], None],
    stop: Callable[[], None] = lambda: None,
    poll_s: float = 0.2,
) -> ScheduleStats:
    """Run every job through ``run_one(job, on_record, on_ready)``, in order, as many at once
    as their slots allow. ``stop`` ends live workers after an interrupt or an error."""
    stats = ScheduleStats(jobs=len(jobs))
    if not jobs:
        return stats
    lock = threading.Lock()
    stopping = threading.Event()

    T = TypeVar("T")

    def serialised(callback: Callable[[T], None]) -> Callable[[T], None]:
        def call(event: T) -> None:
            with lock:
                if not stopping.is_set():
                    callback(event)

        return call

    record, ready = serialised(on_record), serialised(on_ready)
    waiting = list(jobs)
    running: dict[Future[None], Slot] = {}
    used: dict[str, int] = {}
    pool = ThreadPoolExecutor(max_workers=min(len(jobs), 256), thread_name_prefix="harness-job")
    try:
        while waiting or running:
            for job in list(waiting):
                slot = slot_of(job)
                if used.get(slot.key, 0) < slot.capacity:
                    waiting.remove(job)
                    used[slot.key] = used.get(slot.key, 0) + 1
                    running[pool.submit(run_one, job, record, ready)] = slot
            stats.max_concurrent = max(stats.max_concurrent, len(running))
            done, _ = wait(list(running), timeout=poll_s, return_when=FIRST_COMPLETED)
            for future in done:
                slot = running.pop(future)
                used[slot.key] -= 1
                future.result()  # a job's error (disk full, a worker that cannot start) ends the run
    except BaseException:
        with lock:  # wait for a callback in progress, then let nothing more through
            stopping.set()
        stop()
        for future in running:
            future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return stats
