"""Schedule cells onto fresh worker processes and record every outcome.

A worker serves every cell that shares its device and determinism profile (loading each model
once); an independent second worker repeats them for process-to-process comparison. Jobs run
side by side where their slots allow (harness.execution.schedule: one worker per CUDA device,
``parallel`` on the CPU). The executor sits behind one protocol (harness.execution.executor):
local processes (harness.execution.local) or a fleet of machines through Ray
(harness.execution.ray_executor), never a home-made scheduler. The driver alone writes the
run directory: records are appended, and each node's environment is put in the manifest,
from the callbacks, one at a time.
Failure is contained: a cell that times out or whose worker dies is recorded as such and a
new worker carries on with the rest; ``resume`` re-runs only what has no final record.
"""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.digests import digest_json
from harness.errors import HarnessError
from harness.execution.executor import Executor, Job, failure, require_executor
from harness.execution.local import LocalProcessExecutor
from harness.execution.protocol import CellPayload, Ready
from harness.execution.schedule import run_jobs
from harness.execution.stacks import PreparedStack, prepare_stacks
from harness.spec.cell import Cell
from harness.spec.kinds import KINDS
from harness.spec.matrix import Matrix, expand
from harness.store.manifest import CHECKED_ON_MERGE, Manifest, check_metadata
from harness.store.receipts import RECEIPT_VERSION
from harness.store.records import Record
from harness.store.run import RunStore, StoreError, new_run_id
from harness.vocabulary import CURRENT_STACK

FINAL = ("ok", "skipped")  # cells with these records are not run again on resume


class RunInterrupted(HarnessError, RuntimeError):
    pass


def cell_payload(cell: Cell, lint: list[str]) -> CellPayload:
    return CellPayload(
        cell_id=cell.cell_id,
        spec_hash=cell.spec_hash,
        config_id=cell.config_id,
        task_name=cell.task_name,
        kind=cell.kind,
        model=KINDS.get(cell.kind).model_of(cell.task_doc),
        axes=cell.axes,
        task_doc=cell.task_doc,
        lint=lint,
        artifact_name=cell.cell_id.replace("/", "__"),
        engine=cell.engine,
    )


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
            model = str(cell.task_doc.get("model") or "")  # validated by parse_task: a name or absent
            if model and model not in facts:
                facts[model] = (model_limits(model), model_generation_config(model))
            limits, generation = facts.get(model, (None, None))
            out[key] = [str(w) for w in lint_task(task, cell.axes.device, limits, generation)]
        out[cell.cell_id] = out[key]
    return out


def tiny_models_of(matrix: Matrix) -> dict[str, str]:
    """Build the tiny models (and check the stand-ins) the matrix uses, once, before workers race,
    and return their weights hashes."""
    from harness.models.loading import is_builtin, resolve_model

    found: dict[str, str] = {}

    def visit(doc: Any) -> None:
        if isinstance(doc, dict):
            ref = doc.get("model")
            if isinstance(ref, str) and is_builtin(ref) and ref not in found:
                found[ref] = str(resolve_model(ref).weights_sha256)
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


def run_matrix(
    matrix: Matrix,
    out_dir: Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    executor: Executor | None = None,
    max_cells: int | None = None,
    reports_root: Path = Path("reports"),
    parallel: int | None = None,
) -> RunSummary:
    """Run (or resume) a matrix. ``parallel``: CPU workers at once (default: the matrix's
    ``parallel`` key, itself 1 by default); CUDA devices always get one worker each."""
    from harness import __version__

    # Importing torch to look for GPUs costs seconds: only when the matrix asks for one.
    wants_gpu = any(
        d != "cpu"
        for e in [matrix.spec.axes.model_dump()] + [t.axes for t in matrix.spec.tasks]
        for d in e.get("device", []) or []
    )
    executor = require_executor(LocalProcessExecutor() if executor is None else executor)
    devices = executor.devices() if wants_gpu else ["cpu"]  # a fleet's devices, not the driver's
    cells = expand(matrix, devices, **({"max_cells": max_cells} if max_cells else {}))
    if not cells:
        from harness.spec.matrix import MatrixError

        raise MatrixError(
            f"matrix {matrix.spec.name!r} expands to no cells (its excludes remove every one, or an "
            f"axis is empty): nothing would be tested"
        )
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
            raise StoreError(
                f"{run_dir}: this run was made from a different matrix; resume it with the same matrix file"
            )
        here = Manifest(
            harness_version=__version__,
            matrix_digest=manifest.matrix_digest,  # checked just above
            tiny_models=tiny_models_of(matrix),
        )
        try:  # records from another harness or other tiny weights must not be merged into this run
            check_metadata(
                manifest,
                here,
                CHECKED_ON_MERGE,
                f"{run_dir}: cannot resume",
                "; finish it with the harness and tiny models that began it",
            )
        except StoreError:
            store.unlock()
            raise
    else:
        if (run_dir / "results.jsonl").exists():
            raise StoreError(f"{run_dir}: already holds results; use --resume to finish it or choose another --out")
        store = RunStore.create(
            run_dir,
            Manifest(
                harness_version=__version__,
                run_id=run_dir.name,
                created_at=time.time(),
                matrix=matrix.to_doc(),
                matrix_digest=matrix_digest,
                environment=None,
                tiny_models=tiny_models_of(matrix),
                status="running",
                devices=devices,
                receipt_version=RECEIPT_VERSION,  # every ok record of this run must carry a receipt
            ),
        )
    summary = RunSummary(run_dir=run_dir, total=len(cells))
    if resume and before == "interrupted":
        summary.problems.append(
            f"{run_dir}: the run was interrupted (its manifest said running but no process held its lock); resuming it"
        )
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
        _execute(store, matrix, pending, lint, summary, executor, progress, parallel or matrix.spec.parallel)
        if not store.manifest().environment:  # no worker started (all skipped or done)
            from harness.execution.env import fingerprint

            store.update_manifest(environment=fingerprint())
        store.update_manifest(status="complete", finished_at=time.time())
    except OSError as err:  # a full disk can strike any write: job files, logs, the manifest
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StoreError(
                f"{store.path}: disk full while writing the run; finished records are kept; "
                f"free space and finish with --resume"
            ) from None
        raise
    except KeyboardInterrupt:
        store.update_manifest(status="interrupted")
        raise RunInterrupted(
            f"interrupted; finished records are kept in {run_dir}; finish with "
            f"`harness run MATRIX --resume --out {run_dir}`"
        ) from None
    finally:
        store.unlock()
    return summary


def _execute(
    store: RunStore,
    matrix: Matrix,
    pending: list[Cell],
    lint: dict[str, list[str]],
    summary: RunSummary,
    executor: Executor,
    progress: bool,
    parallel: int,
) -> None:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from harness.execution.nodes import NodeBook

    nodes = NodeBook(store)

    def write(record: Record | dict[str, Any]) -> None:
        rec = Record.model_validate(nodes.stamp(record))
        try:
            store.append(rec)
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise StoreError(
                    f"{store.path}: disk full while writing results.jsonl; finished records are kept; "
                    f"free space and finish with --resume"
                ) from None
            raise
        summary.executed += 1
        summary.statuses[rec.status] = summary.statuses.get(rec.status, 0) + 1
        bar.update(task_id, advance=1, failures=summary.statuses.get("failed", 0) + summary.statuses.get("timeout", 0))

    def on_ready(event: Ready) -> None:
        """The environment is the one the workers really ran in (recorded once per node)."""
        nodes.on_ready(event)

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failures]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task_id = bar.add_task(matrix.spec.name, total=len(pending), failures=0)
        runnable = []
        for cell in pending:
            if cell.skip_reason:
                write(failure(cell_payload(cell, lint.get(cell.cell_id, [])), "skipped", cell.skip_reason))
            else:
                runnable.append(cell)
        stacks = _prepare_stacks(store, matrix, runnable)
        ready = []
        for cell in runnable:
            stack = stacks[cell.axes.stack]
            if stack.problem:  # cannot be built or started: what was not tested, and why
                write(failure(cell_payload(cell, lint.get(cell.cell_id, [])), "skipped", stack.problem))
            elif stack.refusal:  # another harness build would run it: refused, as a Ray node does
                write(failure(cell_payload(cell, lint.get(cell.cell_id, [])), "failed", f"not run: {stack.refusal}"))
            else:
                ready.append(cell)
        jobs = _jobs(store, matrix, ready, lint, stacks)
        cpu_jobs = sum(job.device == "cpu" for job in jobs)
        for job in jobs:
            job.cores_shared = job.device == "cpu" and parallel > 1 and cpu_jobs > 1
        started = time.time()
        stats = run_jobs(jobs, executor.run, lambda job: executor.slot(job, parallel), write, on_ready, executor.stop)
    session = {
        **executor.describe(),
        "parallel": parallel,
        "jobs": stats.jobs,
        "max_concurrent_workers": stats.max_concurrent,
        "started_at": started,
        "wall_s": round(time.time() - started, 3),
    }
    store.update_manifest(execution=[*(store.manifest().execution or []), session])


def _prepare_stacks(store: RunStore, matrix: Matrix, cells: list[Cell]) -> dict[str, PreparedStack]:
    """The stacks the cells run under, built or taken from the cache, recorded in the manifest."""
    names = {c.axes.stack for c in cells}
    base = matrix.source.parent if matrix.source else Path.cwd()
    stacks = prepare_stacks(matrix.spec.stacks, names, base)
    if len(stacks) > 1:
        store.update_manifest(
            stacks={**(store.manifest().stacks or {}), **{n: s.describe() for n, s in stacks.items()}}
        )
    return stacks


def _jobs(
    store: RunStore,
    matrix: Matrix,
    runnable: list[Cell],
    lint: dict[str, list[str]],
    stacks: dict[str, PreparedStack],
) -> list[Job]:
    """One job per (device, profile, kernel set, TF32, stack, worker): a worker loads each
    model once for its cells."""
    groups: dict[tuple[str, str, str, str, str, int], list[Cell]] = {}
    for cell in runnable:
        groups.setdefault((*cell.group_key, cell.axes.worker), []).append(cell)
    jobs = []
    for (device, profile, isa, tf32, stack, worker), group in groups.items():
        group.sort(
            key=lambda c: (
                c.task_doc.get("model", ""),
                c.axes.dtype,
                str(c.axes.quantize_bits),
                c.task_name,
                c.axes.threads or 0,
                c.axes.batch_size,
                c.axes.seed,
                c.axes.repeat,
            )
        )
        jobs.append(
            Job(
                str(store.path),
                device,
                profile,
                worker,
                [cell_payload(c, lint.get(c.cell_id, [])) for c in group],
                matrix.spec.timeout_s,
                isa=isa,
                tf32=tf32,
                **_stack_fields(stack, stacks[stack]),
            )
        )
    return jobs


def _stack_fields(name: str, stack: PreparedStack) -> dict[str, Any]:
    """A job's stack: its name, interpreter and overlay (the executor's own for current)."""
    if name == CURRENT_STACK:
        return {"stack": name}
    return {"stack": name, "python": stack.python, "pythonpath": stack.path}
