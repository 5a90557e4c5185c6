"""Schedule cells onto fresh worker processes and record every outcome.

A worker serves every cell that shares its device and determinism profile (loading each model
once); an independent second worker repeats them for process-to-process comparison. Jobs run
side by side where their slots allow (harness.execution.schedule: one worker per CUDA device,
``parallel`` on the CPU). The executor sits behind a small interface (``Executor.run``):
local processes here, a fleet of machines through Ray (harness.execution.ray_executor), never
a home-made scheduler. The driver alone writes the run directory: records are appended, and
each node's environment is put in the manifest, from the callbacks, one at a time.
Failure is contained: a cell that times out or whose worker dies is recorded as such and a
new worker carries on with the rest; ``resume`` re-runs only what has no final record.
"""

from __future__ import annotations

import errno
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from harness.digests import digest_json
from harness.errors import HarnessError
from harness.execution.protocol import CellPayload, Done, Ready, RecordEvent, Start, WorkerJob, parse_event
from harness.hubenv import apply_library_env
from harness.spec.kinds import KINDS
from harness.execution.schedule import Slot, local_slot, run_jobs
from harness.spec.matrix import Cell, Matrix, available_devices, expand
from harness.store.manifest import CHECKED_ON_MERGE, Manifest, check_metadata
from harness.store.receipts import RECEIPT_VERSION
from harness.store.records import Record
from harness.store.run import RunStore, StoreError, new_run_id

FINAL = ("ok", "skipped")  # cells with these records are not run again on resume


class RunInterrupted(HarnessError, RuntimeError):
    pass


@dataclass
class Job:
    run_dir: str
    device: str
    profile: str
    worker: int
    cells: list[CellPayload]
    timeout_s: float
    cores_shared: bool = False
    isa: str = "native"  # the CPU kernel set of every cell of the job (a worker's is fixed at start)
    tf32: str = "off"  # other CPU workers may run beside this one (--parallel > 1)


class Executor(Protocol):
    """Runs one job's cells in a fresh worker and reports each record (a Record, or the dict of
    a failure the executor itself observed) and the workers' ``ready`` events through the
    callbacks. Optional: ``slot(job, parallel)`` says which jobs may run at once (default: one
    worker per device, ``parallel`` on the CPU); ``stop()`` ends live workers; ``describe()``
    is what the manifest records about the executor. ``run`` may be called from several
    threads at once."""

    def run(self, job: Job, on_record: Callable[[Record | dict[str, Any]], None],
            on_ready: Callable[[Ready | dict[str, Any]], None] | None = None) -> None: ...


def cell_payload(cell: Cell, lint: list[str]) -> CellPayload:
    return CellPayload(cell_id=cell.cell_id, spec_hash=cell.spec_hash, config_id=cell.config_id,
                       task_name=cell.task_name, kind=cell.kind, model=_model_of(cell), axes=cell.axes,
                       task_doc=cell.task_doc, lint=lint, artifact_name=cell.cell_id.replace("/", "__"),
                       engine=cell.engine)


def _model_of(cell: Cell) -> str:
    """The task's model; a staged kind's (a chain's) models, in stage order."""
    doc = cell.task_doc
    return doc.get("model") or " -> ".join(doc[stage]["model"] for stage in KINDS.get(cell.kind).stages)


class LocalProcessExecutor:
    """One ``python -m harness.execution.worker`` process per job; restarted after a crash or timeout."""

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None):
        self.python = python or sys.executable
        self.env = env
        self._live: set[subprocess.Popen] = set()  # several jobs may run at once (one thread each)
        self._guard = threading.Lock()
        self._stopped = threading.Event()

    def slot(self, job: Job, parallel: int) -> Slot:
        return local_slot(job, parallel)

    def describe(self) -> dict[str, Any]:
        return {"executor": "local"}

    def stop(self) -> None:
        """Kill every live worker and start no more (an interrupt or another job's error)."""
        self._stopped.set()
        with self._guard:
            live = list(self._live)
        for proc in live:
            self._kill(proc)

    def _start(self, job: Job, cells: list[CellPayload]) -> tuple[subprocess.Popen, "queue.Queue[Any]", str]:
        fd, path = tempfile.mkstemp(prefix="job-", suffix=".json", dir=job.run_dir)
        with os.fdopen(fd, "w") as fh:
            fh.write(WorkerJob(run_dir=job.run_dir, profile=job.profile, cells=cells, parent_pid=os.getpid(),
                               isa=job.isa, tf32=job.tf32).model_dump_json())
        env = dict(os.environ if self.env is None else self.env)
        apply_library_env(env)
        if job.cores_shared:
            # OpenMP threads spin while they wait; with two workers on two cores each spinning
            # thread takes a core from the other's compute (the smoke matrix ran 10x slower at
            # --parallel 2). Passive waiting changes no result, only how idle threads wait.
            env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        log = open(Path(job.run_dir) / f"worker-{worker_label(job)}.log", "ab")
        proc = subprocess.Popen([self.python, "-m", "harness.execution.worker", path], stdout=subprocess.PIPE, stderr=log,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        log.close()
        events: queue.Queue[Any] = queue.Queue()

        def pump() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                event = parse_event(line)
                if event is not None:
                    events.put(event)
            events.put(None)

        threading.Thread(target=pump, daemon=True).start()
        with self._guard:
            self._live.add(proc)
        return proc, events, path

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()

    def run(self, job: Job, on_record: Callable[[Record | dict[str, Any]], None],
            on_ready: Callable[[Ready | dict[str, Any]], None] | None = None) -> None:
        remaining = list(job.cells)
        # timeout_s = inf (valid TOML) means no timeout: a queue wait beyond TIMEOUT_MAX overflows
        limit = job.timeout_s if job.timeout_s < threading.TIMEOUT_MAX / 2 else None
        while remaining and not self._stopped.is_set():
            proc, events, job_file = self._start(job, remaining)
            in_flight: CellPayload | None = None
            deadline: float | None = None
            try:
                while True:
                    wait = None if deadline is None else max(0.05, deadline - time.monotonic())
                    try:
                        event = events.get(timeout=wait)
                    except queue.Empty:  # the cell in flight ran past its timeout
                        self._kill(proc)
                        on_record(_failure(in_flight, "timeout", f"timed out after {job.timeout_s:.0f} s; worker killed"))
                        remaining = remaining[remaining.index(in_flight) + 1:]
                        break
                    if event is None:  # the worker exited
                        code = proc.wait()
                        if in_flight is None and not remaining:
                            break
                        if in_flight is None:
                            raise RuntimeError(f"worker exited with code {code} before starting; see its log in {job.run_dir}")
                        how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                        on_record(_failure(in_flight, "failed", f"worker {how} while running this cell"))
                        remaining = remaining[remaining.index(in_flight) + 1:]
                        break
                    if isinstance(event, Ready) and on_ready is not None:
                        on_ready(event)
                    elif isinstance(event, Start):
                        in_flight = next(c for c in remaining if c.cell_id == event.cell_id)
                        deadline = None if limit is None else time.monotonic() + limit
                    elif isinstance(event, RecordEvent):
                        on_record(event.record)
                        in_flight, deadline = None, None
                        remaining = [c for c in remaining if c.cell_id != event.record.cell_id]
                    elif isinstance(event, Done):
                        proc.wait()
                        remaining = []
                        break
            finally:
                self._kill(proc)
                with self._guard:
                    self._live.discard(proc)
                try:
                    os.unlink(job_file)
                except OSError:
                    pass


def worker_label(job: Job) -> str:
    """``cpu-on-w0``, ``cpu-on-isa-avx2-w1``, ``cuda0-on-tf32-w0``: a job's worker, in log names."""
    kernels = (f"-isa-{job.isa}" if job.isa != "native" else "") + ("-tf32" if job.tf32 == "on" else "")
    return f"{job.device.replace(':', '')}-{job.profile}{kernels}-w{job.worker}"


def _failure(cell: CellPayload, status: str, reason: str) -> dict[str, Any]:
    return {**cell.identity(), "status": status, "reason": reason, "finished_at": time.time()}


@dataclass
class RunSummary:
    run_dir: Path
    total: int
    executed: int = 0
    resumed_skipped: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _lint_for(matrix: Matrix, cells: list[Cell]) -> dict[str, list[str]]:
    from harness.spec.lint import lint_task, model_generation_config, model_limits
    from harness.spec.tasks import parse_task

    out: dict[str, list[str]] = {}
    facts: dict[str, tuple[Any, Any]] = {}  # model -> (limits, generation config)
    for cell in cells:
        key = f"{cell.task_name}|{cell.axes.device}|{cell.axes.quantize_bits}|{cell.axes.seed}|{cell.axes.dtype}"
        if key not in out:
            task = parse_task(cell.task_doc, cell.kind)
            model = cell.task_doc.get("model")
            if model and model not in facts:
                facts[model] = (model_limits(model), model_generation_config(model))
            limits, generation = facts.get(model, (None, None))
            out[key] = [str(w) for w in lint_task(task, cell.axes.device, limits, generation)]
        out[cell.cell_id] = out[key]
    return out


def tiny_models_of(matrix: Matrix) -> dict[str, str]:
    """Build the tiny models the matrix uses (once, before workers race) and return their hashes."""
    from harness.models.tiny import tiny_info

    found: dict[str, str] = {}

    def visit(doc: Any) -> None:
        if isinstance(doc, dict):
            ref = doc.get("model")
            if isinstance(ref, str) and ref.startswith("tiny:"):
                found[ref] = tiny_info(ref.split(":", 1)[1])["weights_sha256"]
            for v in doc.values():
                visit(v)

    for _, doc in matrix.tasks.values():
        visit(doc)
    return found


def matrix_digest_of(matrix: Matrix) -> str:
    """What a resumed run must match: the matrix without ``parallel`` (how many workers run at
    once changes no output, so a run may be resumed with another value)."""

    doc = {**matrix.to_doc(), "source": None}
    doc["spec"] = {k: v for k, v in doc["spec"].items() if k != "parallel"}
    return digest_json(doc)


def run_matrix(matrix: Matrix, out_dir: Path | None = None, *, resume: bool = False, progress: bool = True,
               executor: Executor | None = None, max_cells: int | None = None, reports_root: Path = Path("reports"),
               parallel: int | None = None) -> RunSummary:
    """Run (or resume) a matrix. ``parallel``: CPU workers at once (default: the matrix's
    ``parallel`` key, itself 1 by default); CUDA devices always get one worker each."""
    from harness import __version__

    # Importing torch to look for GPUs costs seconds: only when the matrix asks for one.
    wants_gpu = any(d != "cpu" for e in [matrix.spec.axes.model_dump()] + [t.axes for t in matrix.spec.tasks]
                    for d in e.get("device", []) or [])
    cluster_devices = getattr(executor, "devices", None)  # a fleet's devices, not the driver's
    devices = (cluster_devices() if cluster_devices else available_devices()) if wants_gpu else ["cpu"]
    cells = expand(matrix, devices, **({"max_cells": max_cells} if max_cells else {}))
    if not cells:
        from harness.spec.matrix import MatrixError

        raise MatrixError(f"matrix {matrix.spec.name!r} expands to no cells (its excludes remove every one, or an "
                          f"axis is empty): nothing would be tested")
    if matrix.spec.engine == "node-runner":  # before any run directory exists: one clear line
        from harness.engines.node_runner import require_runner_packages

        require_runner_packages({kind for kind, _ in matrix.tasks.values()})
    run_dir = Path(out_dir) if out_dir else reports_root / "runs" / new_run_id(matrix.spec.name)
    # what was asked, not where the file was (the same matrix given by another path resumes), and
    # not how many workers ran at once
    matrix_digest = matrix_digest_of(matrix)
    legacy_digest = digest_json(matrix.to_doc())
    if resume:
        if not (run_dir / "manifest.json").exists():
            raise StoreError(f"{run_dir}: nothing to resume (no manifest.json)")
        store = RunStore(run_dir)
        from harness.store.evidence import run_status

        before = run_status(store, store.manifest())  # before we take the lock ourselves
        store.lock()
        manifest = store.manifest()
        if manifest.matrix_digest not in (matrix_digest, legacy_digest):
            store.unlock()
            raise StoreError(f"{run_dir}: this run was made from a different matrix; resume it with the same matrix file")
        here = Manifest(harness_version=__version__, matrix_digest=manifest.matrix_digest,  # checked just above
                        tiny_models=tiny_models_of(matrix))
        try:  # records from another harness or other tiny weights must not be merged into this run
            check_metadata(manifest, here, CHECKED_ON_MERGE, f"{run_dir}: cannot resume",
                           "; finish it with the harness and tiny models that began it")
        except StoreError:
            store.unlock()
            raise
    else:
        if (run_dir / "results.jsonl").exists():
            raise StoreError(f"{run_dir}: already holds results; use --resume to finish it or choose another --out")
        store = RunStore.create(run_dir, Manifest(
            harness_version=__version__, run_id=run_dir.name, created_at=time.time(),
            matrix=matrix.to_doc(), matrix_digest=matrix_digest, environment=None,
            tiny_models=tiny_models_of(matrix), status="running", devices=devices,
            receipt_version=RECEIPT_VERSION,  # every ok record of this run must carry a receipt
        ))
    summary = RunSummary(run_dir=run_dir, total=len(cells))
    if resume and before == "interrupted":
        summary.problems.append(f"{run_dir}: the run was interrupted (its manifest said running but no process held "
                                f"its lock); resuming it")
    if resume:
        store.update_manifest(status="running")
    try:
        note = store.repair_tail()
        if note:
            summary.problems.append(note)
        loaded = store.load_records()
        summary.problems += loaded.problems
        done = {r.cell_id for r in loaded.records if r.status in FINAL}
        pending = [c for c in cells if c.cell_id not in done]
        summary.resumed_skipped = len(cells) - len(pending)
        lint = _lint_for(matrix, pending)
        _execute(store, matrix, pending, lint, summary, executor or LocalProcessExecutor(), progress,
                 parallel or matrix.spec.parallel)
        if not store.manifest().environment:  # no worker started (all skipped or done)
            from harness.execution.env import fingerprint

            store.update_manifest(environment=fingerprint())
        store.update_manifest(status="complete", finished_at=time.time())
    except OSError as err:  # a full disk can strike any write: job files, logs, the manifest
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(f"{store.path}: disk full while writing the run; finished records are kept; "
                             f"free space and finish with --resume") from None
        raise
    except KeyboardInterrupt:
        store.update_manifest(status="interrupted")
        raise RunInterrupted(f"interrupted; finished records are kept in {run_dir}; finish with "
                             f"`harness run MATRIX --resume --out {run_dir}`") from None
    finally:
        store.unlock()
    return summary


def _execute(store: RunStore, matrix: Matrix, pending: list[Cell], lint: dict[str, list[str]], summary: RunSummary,
             executor: Executor, progress: bool, parallel: int) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from harness.execution.nodes import NodeBook

    nodes = NodeBook(store)

    def write(record: Record | dict[str, Any]) -> None:
        rec = Record.model_validate(nodes.stamp(record))
        try:
            store.append(rec)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise StoreError(f"{store.path}: disk full while writing results.jsonl; finished records are kept; "
                                 f"free space and finish with --resume") from None
            raise
        summary.executed += 1
        summary.statuses[rec.status] = summary.statuses.get(rec.status, 0) + 1
        bar.update(task_id, advance=1, failures=summary.statuses.get("failed", 0) + summary.statuses.get("timeout", 0))

    def on_ready(event: Ready | dict[str, Any]) -> None:
        """The environment is the one the workers really ran in (recorded once per node)."""
        nodes.on_ready(event)

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("failed {task.fields[failures]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task_id = bar.add_task(matrix.spec.name, total=len(pending), failures=0)
        runnable = []
        for cell in pending:
            if cell.skip_reason:
                write(_failure(cell_payload(cell, lint.get(cell.cell_id, [])), "skipped", cell.skip_reason))
            else:
                runnable.append(cell)
        jobs = _jobs(store, matrix, runnable, lint)
        cpu_jobs = sum(job.device == "cpu" for job in jobs)
        for job in jobs:
            job.cores_shared = job.device == "cpu" and parallel > 1 and cpu_jobs > 1
        slot = getattr(executor, "slot", local_slot)
        started = time.time()
        stats = run_jobs(jobs, executor.run, lambda job: slot(job, parallel), write, on_ready,
                         getattr(executor, "stop", lambda: None))
    describe = getattr(executor, "describe", None)
    session = {**(describe() if describe else {"executor": type(executor).__name__}), "parallel": parallel,
               "jobs": stats.jobs, "max_concurrent_workers": stats.max_concurrent, "started_at": started,
               "wall_s": round(time.time() - started, 3)}
    store.update_manifest(execution=[*(store.manifest().execution or []), session])


def _jobs(store: RunStore, matrix: Matrix, runnable: list[Cell], lint: dict[str, list[str]]) -> list[Job]:
    """One job per (device, profile, kernel set, TF32, worker): a worker loads each model once
    for its cells."""
    groups: dict[tuple[str, str, str, str, int], list[Cell]] = {}
    for cell in runnable:
        groups.setdefault((*cell.group_key, cell.axes.worker), []).append(cell)
    jobs = []
    for (device, profile, isa, tf32, worker), group in groups.items():
        group.sort(key=lambda c: (c.task_doc.get("model", ""), c.axes.dtype, str(c.axes.quantize_bits), c.task_name,
                                  c.axes.threads or 0, c.axes.batch_size, c.axes.seed, c.axes.repeat))
        jobs.append(Job(str(store.path), device, profile, worker,
                        [cell_payload(c, lint.get(c.cell_id, [])) for c in group], matrix.spec.timeout_s,
                        isa=isa, tf32=tf32))
    return jobs
