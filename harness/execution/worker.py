"""A worker process: runs a list of cells that share a device and determinism profile.

Started fresh by the runner so the determinism environment is in place before torch starts
CUDA. It loads each (model, dtype, quant) once (a ``cold`` cell seeds and then loads a fresh
copy, which the following cells reuse), switches thread counts in place, writes each
cell's artifact (atomically) and reports one JSON line per event on a private pipe (the
original stdout; library chatter goes to stderr). The runner owns results.jsonl.

Fault injection for tests and drills (``HARNESS_FAULT``): ``kill:<glob>``, ``hang:<glob>``,
``oom:<glob>`` or ``raise:<glob>``, optionally ``@<once-file>`` so it fires once only.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, TextIO

from harness.execution import quiet_logs
from harness.execution.protocol import Done, Ready, RecordEvent, Start, WorkerJob, event_line


def _one_line(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("\n", " ")
    return text[:500]


def _maybe_fault(cell_id: str) -> None:
    spec = os.environ.get("HARNESS_FAULT")
    if not spec:
        return
    action, _, rest = spec.partition(":")
    pattern, _, once = rest.partition("@")
    if not fnmatch.fnmatch(cell_id, pattern):
        return
    if once:
        marker = Path(once)
        if marker.exists():
            return
        marker.write_text(cell_id)
    if action == "kill":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "hang":
        time.sleep(3600)
    elif action == "oom":
        _simulate_oom()
    elif action == "raise":
        raise RuntimeError(f"injected fault in {cell_id}")


def _simulate_oom() -> None:
    """A real allocation failure, not a pretend one: cap this process's address space
    (RLIMIT_AS, soft limit only) 256 MiB above what it already maps and ask torch's allocator
    for 512 MiB, which it refuses as on a node out of memory (a RuntimeError "can't allocate
    memory"); the cap is lifted again so the worker goes on with the next cell."""
    import resource

    import torch

    try:
        with open("/proc/self/statm") as fh:
            used = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        raise MemoryError("injected out-of-memory (no /proc/self/statm to size the cap)") from None
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + 256 * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        torch.empty(512 * 1024 * 1024, dtype=torch.uint8)  # one allocation: no fill, no thread start
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
    raise MemoryError("injected out-of-memory: the address-space cap did not stop the allocation")


def _is_cpu_oom(err: BaseException) -> bool:
    """torch's CPU allocator reports exhaustion as a RuntimeError, not MemoryError."""
    return isinstance(err, RuntimeError) and "can't allocate memory" in str(err)


def run_job(job: WorkerJob | dict[str, Any], proto: TextIO) -> None:
    from harness.determinism import apply_environment

    job = WorkerJob.model_validate(job)
    apply_environment(job.profile, isa=job.isa, tf32=job.tf32)  # before torch is imported
    from harness.engines.base import ModelCache
    from harness.execution.execute import execute
    from harness.models.loading import ModelNotFound, UnsupportedConfiguration
    from harness.spec.tasks import TaskError, parse_task
    from harness.store.records import Record
    from harness.store.run import RunStore

    def emit(event: Ready | Start | RecordEvent | Done) -> None:
        proto.write(event_line(event))
        proto.flush()

    store = RunStore(job.run_dir)
    cache = ModelCache()
    from harness.execution.env import fingerprint  # imports torch now, so no cell's timeout pays for it

    environment = fingerprint()
    emit(Ready(pid=os.getpid(), environment=environment, stack=job.stack))
    from harness.store.receipts import environment_facts

    libraries = environment_facts(environment)[0]  # what this stack's executions ran with
    refusal = kernels_refusal(job.isa, environment["kernels"])
    folders: dict[str, str | None] = {}
    # hash model folders before any cell's timeout clock starts; only an execution's record
    # names its model files (a replay, locate or validate job does not read them)
    for cell in (c for c in job.cells if c.work is None):
        try:
            _model_files(cell.task_doc, folders)
        except Exception:  # a missing model is that cell's failure, reported when it runs
            pass
    for cell in job.cells:
        emit(Start(cell_id=cell.cell_id, t=time.time()))
        base = cell.identity()
        base.update(worker_pid=os.getpid(), started_at=time.time(), libraries=libraries)
        try:
            if refusal:  # the level asked is not what the libraries run: no cell may claim it
                raise UnsupportedConfiguration(refusal)
            _maybe_fault(cell.cell_id)
            task = parse_task(cell.task_doc, cell.kind)
            if cell.work is not None:  # a replay, locate or validate job (harness.execution.protocol.Work)
                from harness.execution.executors import WORK

                record = {**base, **WORK.get(cell.work.job)(cell, task, cache, store)}
            else:
                axes = cell.axes
                ex = execute(
                    task,
                    cell.kind,
                    axes.device,
                    cache,
                    threads=axes.threads,
                    profile=axes.profile,
                    batch_size=axes.batch_size,
                    load=axes.load,
                    engine=cell.engine,
                    tf32=axes.tf32,
                )
                ex.determinism["kernels"] = environment["kernels"]
                digests = ex.output.digests()
                artifact = store.write_artifact(cell.artifact_name, ex.output.arrays)
                record = {
                    **base,
                    "status": "ok",
                    "digests": digests,
                    "artifact": artifact,
                    "timings": ex.timings,
                    "peak_memory_bytes": ex.peak_memory_bytes,
                    "memory_kind": ex.memory_kind,
                    "warnings": ex.warnings[:20],
                    "nondeterministic_warnings": ex.nondeterministic_warnings[:20],
                    "output": {
                        **ex.output.describe(),
                        **({"response": ex.output.response} if ex.output.response else {}),
                    },
                    "model_meta": {**ex.model_meta, "model_files_sha256": _model_files(cell.task_doc, folders)},
                    "determinism": ex.determinism,
                }
                record["receipt"] = _receipt(record, cell.task_doc, environment, digests)
        except (UnsupportedConfiguration, ModelNotFound) as err:
            record = {**base, "status": "skipped", "reason": _one_line(err)}
        except TaskError as err:
            record = {**base, "status": "failed", "reason": _one_line(err)}
        except MemoryError as err:
            record = {**base, "status": "failed", "reason": f"out of memory ({_one_line(err)})"}
        except Exception as err:  # one cell's failure must not end the worker
            if type(err).__name__ == "OutOfMemoryError":
                reason = f"CUDA out of memory ({_one_line(err)})"
                import torch

                torch.cuda.empty_cache()
            elif _is_cpu_oom(err):
                reason = f"out of memory ({_one_line(err)})"
            else:
                reason = _one_line(err)
            traceback.print_exc(file=sys.stderr)
            record = {**base, "status": "failed", "reason": reason}
        record["finished_at"] = time.time()
        try:
            typed = Record.model_validate(record)
        except ValueError as err:  # a record the store would refuse: the cell failed, the worker goes on
            typed = Record.model_validate(
                {
                    **base,
                    "status": "failed",
                    "finished_at": record["finished_at"],
                    "reason": f"invalid record ({_one_line(err)})",
                }
            )
        emit(RecordEvent(record=typed))
        quiet_logs.flush_repeats()
    emit(Done())


def kernels_refusal(level: str, kernels: dict[str, Any]) -> str | None:
    """Why this worker cannot run cells at kernel level ``level`` (None when it can): ATen's
    capability in force must be the one the level sets (oneDNN and oneMKL caps are read back
    and recorded; they only lower, never raise, a library's choice)."""
    from harness.isa import LEVELS, RELATIVE_LEVELS

    if level in RELATIVE_LEVELS:  # resolved before torch started (harness.isa.apply): the level it became
        level = str(kernels.get("isa") or level)
    if level == "native" or level not in LEVELS:
        return None
    want = LEVELS[level].aten.upper()
    have = str(kernels.get("aten") or "unknown").upper()
    if have != want:
        return f"isa {level} asked for ATen {want} kernels but ATen runs {have}"
    return None


def _model_files(task_doc: dict[str, Any], cache: dict[str, str | None]) -> dict[str, str | None]:
    """sha256 of every file of every model folder the task names, hashed once per worker:
    the weights the receipt binds are the bytes on disk now, not a cache's note about them."""
    from harness.models.loading import resolve_model
    from harness.store.receipts import folder_digest, model_refs

    out: dict[str, str | None] = {}
    for ref in model_refs(task_doc):
        if ref not in cache:
            try:
                cache[ref] = folder_digest(Path(resolve_model(ref).path))
            except Exception:  # an engine's own model (no folder here): the receipt binds None
                cache[ref] = None
        out[ref] = cache[ref]
    return out


def _receipt(
    record: dict[str, Any], task_doc: dict[str, Any], environment: dict[str, Any], digests: dict[str, str]
) -> dict[str, Any]:
    from harness import __version__
    from harness.store.receipts import link_values, make_receipt

    return make_receipt(link_values(record, task_doc, __version__, environment, digests))


def _die_with_parent(parent_pid: int | None) -> None:
    """Linux: the kernel SIGKILLs this worker when the harness process that started it dies,
    however it dies (SIGKILL, SIGTERM, the OOM killer), so no orphan keeps a GPU busy or
    writes artifacts into a run that another process may be resuming."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # it died before we asked
        os._exit(1)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    proto = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # libraries that print must not corrupt the protocol
    quiet_logs.install()  # repeated library log lines are counted, not repeated
    job = WorkerJob.model_validate_json(Path(argv[0]).read_text())
    try:  # read once: gone even if the harness is SIGKILLed (it used to stay behind in the run dir)
        os.unlink(argv[0])
    except OSError:
        pass
    _die_with_parent(job.parent_pid)
    run_job(job, proto)
    quiet_logs.flush_repeats()
    proto.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every record is already reported and every artifact fsynced: skip the interpreter's
    # teardown of torch and the model cache (about 2 s per worker here).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
