"""Run replay and locate jobs through the executors, like any cell, and hand back their results.

Why: replay under another kernel level and locate's re-runs used to start their own worker
processes (with no timeout handling, no retry, no stop and no Ray). Here such a job is a
cell whose payload carries ``work`` (harness.execution.protocol): the local or Ray executor
runs it in the one worker (harness.execution.worker), under the kernel level, thread count
and determinism profile of its axes, and its record and artifact come back as a run's do,
into a scratch run directory that lives as long as the call.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.execution.executor import Executor, Job
from harness.execution.protocol import CellPayload, LocateWork, ReplayWork, ValidateWork
from harness.execution.schedule import run_jobs
from harness.store.records import Axes, Record


@dataclass
class Outcome:
    """One job's final record (or the executor's failure dict) and its artifact's arrays."""

    record: Record | dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def status(self) -> str:
        return str(self.record.status if isinstance(self.record, Record) else self.record.get("status"))

    @property
    def reason(self) -> str:
        reason = self.record.reason if isinstance(self.record, Record) else self.record.get("reason")
        return str(reason or self.status)

    @property
    def output(self) -> dict[str, Any]:
        return self.record.output if isinstance(self.record, Record) else {}

    @property
    def digests(self) -> dict[str, str]:
        return self.record.digests if isinstance(self.record, Record) else {}


def work_payload(
    job_id: str,
    kind: str,
    task_doc: dict[str, Any],
    work: ReplayWork | LocateWork | ValidateWork,
    *,
    device: str = "cpu",
    threads: int | None = None,
    isa: str = "native",
    profile: str = "on",
) -> CellPayload:
    """The cell that runs ``work`` on ``task_doc`` under these settings."""
    from harness.spec.kinds import KINDS

    settings = KINDS.get(kind).task_settings(task_doc)
    axes = Axes(
        dtype=str(settings["dtype"]),
        quantize_bits=settings["quantize_bits"],
        seed=int(settings["seed"] or 0),
        device=device,
        threads=threads,
        profile=profile,
        isa=isa,
    )
    return CellPayload(
        cell_id=job_id,
        spec_hash=work.job,
        config_id=f"{kind}-{work.job}",
        task_name=job_id,
        kind=kind,
        model=str(task_doc.get("model", kind)),
        axes=axes,
        task_doc=task_doc,
        artifact_name=job_id.replace("/", "__"),
        work=work,
    )


def run_work(
    payloads: list[CellPayload], *, executor: Executor | None = None, timeout_s: float = 600
) -> dict[str, Outcome]:
    """Run the payloads on ``executor`` (the local one by default): one worker per kernel
    level, profile and device, one at a time; each payload's outcome by its cell id."""
    from harness.execution.local import LocalProcessExecutor
    from harness.store.run import ARTIFACTS, RunStore

    executor = executor if executor is not None else LocalProcessExecutor()
    groups: dict[tuple[str, str, str, str], list[CellPayload]] = {}
    for p in payloads:
        groups.setdefault((p.axes.device, p.axes.profile, p.axes.isa, p.axes.tf32), []).append(p)
    records: dict[str, Record | dict[str, Any]] = {}

    def on_record(record: Any) -> None:
        cell_id = record.cell_id if isinstance(record, Record) else record["cell_id"]
        records[cell_id] = record

    with tempfile.TemporaryDirectory(prefix="harness-work-") as tmp:
        (Path(tmp) / ARTIFACTS).mkdir()
        jobs = [
            Job(run_dir=tmp, device=d, profile=prof, worker=0, cells=cells, timeout_s=timeout_s, isa=isa, tf32=tf32)
            for (d, prof, isa, tf32), cells in groups.items()
        ]
        run_jobs(
            jobs,
            executor.run,
            lambda job: executor.slot(job, 1),
            on_record,
            lambda _: None,
            executor.stop,
        )
        store = RunStore(tmp)
        out: dict[str, Outcome] = {}
        for p in payloads:
            record = records.get(p.cell_id, {"cell_id": p.cell_id, "status": "failed", "reason": "no record"})
            artifact = record.artifact if isinstance(record, Record) else None
            out[p.cell_id] = Outcome(record=record, arrays=store.load_artifact(artifact) if artifact else {})
        return out
