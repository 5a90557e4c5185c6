"""Run a matrix on a Ray cluster: one Ray task per job, the same fresh worker inside it.

Why Ray and not a scheduler of our own: placing work on machines, resource accounting,
node failure detection and moving bytes between machines are what Ray is for. What stays
ours is exactly what runs locally: each job is a Ray task that asks for what it uses
(``num_gpus=1`` for a CUDA job, so Ray sets ``CUDA_VISIBLE_DEVICES``; ``num_cpus`` = its
highest thread count for a CPU job) and starts ``python -m harness.execution.worker`` in a
temporary folder on its node, so the determinism environment is set before torch starts.

Records and artifact bytes come back to the driver through a Ray generator, one event at a
time (nodes need not share a filesystem); the driver alone writes the run directory. A lost
Ray worker or node loses only the cell in flight: it is recorded ``failed`` with Ray's
reason, the job's other cells go to a new task, and ``--resume`` re-runs the failed one.

Placement: worker index ``w`` of the matrix runs on node ``w mod N`` of the N alive nodes
that can run the job (head node first, then by address and id), so ``workers = N`` runs
every cell on every node and the analysis can compare nodes. A CPU cell with ``threads =
auto`` uses the node's CPU count as Ray knows it (``ray start --num-cpus``).

Every job carries the driver's harness code digest; a node whose installed harness differs
refuses it (the job's cells are recorded failed, naming both digests), so a partly upgraded
fleet never runs other code under the driver's cell ids.

Drill (tests): ``HARNESS_RAY_FAULT=kill:<cell glob>[@once-file]`` makes the Ray worker
SIGKILL itself when the cell's record is ready, before it is sent: the driver has seen the
cell start and never gets its record, as when a node is lost mid-cell.
"""

from __future__ import annotations

import fnmatch
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.execution.executor import Job, failure, worker_label
from harness.execution.loop import WorkerExecutor
from harness.execution.protocol import (
    CellPayload,
    Event,
    Exit,
    Lost,
    NodeInfo,
    Ready,
    RecordEvent,
    Refused,
    as_event,
    parse_event,
)
from harness.execution.schedule import UNBOUNDED, Slot
from harness.store.records import Node, Record
from harness.vocabulary import CURRENT_STACK

LOG_TAIL_BYTES = 64 * 1024
MAX_FRUITLESS_ATTEMPTS = 2  # tasks in a row that ran no cell before the job's cells are failed


class FleetError(HarnessError, RuntimeError):
    """Ray missing, a cluster that cannot be reached, or a job no node can run."""


def require_ray() -> Any:
    """The ray module (typed Any: ray is read as Any at the edge, see pyproject's [tool.mypy])."""
    try:
        import ray
    except ImportError:
        raise FleetError("--executor ray needs Ray, which is not installed: pip install -e '.[fleet]'") from None
    return ray


# --- on the node --------------------------------------------------------------------------------
def _fault_fires(spec: str | None, cell_id: str) -> bool:
    if not spec or not spec.startswith("kill:"):
        return False
    pattern, _, once = spec[len("kill:") :].partition("@")
    if not fnmatch.fnmatch(cell_id, pattern):
        return False
    if once:
        try:
            fd = os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # the first to create it fires
        except FileExistsError:
            return False
        os.close(fd)
    return True


def _code_mismatch(driver_code: str | None) -> str | None:
    """Why this node must not run the driver's job, or None: another harness build here."""
    from harness.execution.env import code_digest, code_refusal

    return code_refusal(driver_code, code_digest())


def run_job_on_node(job: dict[str, Any], env: dict[str, str], node: dict[str, Any]) -> Iterator[Event]:
    """The body of the Ray task: start the worker on this node and pass its typed events on,
    each ``Ready`` with the node, each record with its node and artifact bytes; end with an
    ``Exit`` (exit code and the log's tail), or a lone ``Refused`` from another harness build."""
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile

    import ray

    from harness.hubenv import apply_library_env

    node_id = ray.get_runtime_context().get_node_id()
    who = {"key": node_id, "hostname": socket.gethostname(), "ray_node_id": node_id}
    refusal = _code_mismatch(job.get("code"))
    if refusal:
        yield Refused(reason=refusal, node=NodeInfo(**who))
        return
    tmp = Path(tempfile.mkdtemp(prefix="harness-ray-job-"))
    proc = None
    try:
        (tmp / "artifacts").mkdir()
        job_file = tmp / "job.json"
        worker_job = {k: v for k, v in job.items() if k != "code"}
        job_file.write_text(json.dumps({**worker_job, "run_dir": str(tmp), "parent_pid": os.getpid()}))
        full_env = dict(apply_library_env({**os.environ, **env}))
        with open(tmp / "worker.log", "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "harness.execution.worker", str(job_file)],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=full_env,
                start_new_session=True,
            )
        assert proc.stdout is not None
        for line in proc.stdout:
            event = parse_event(line)
            if isinstance(event, Ready):
                event = event.model_copy(update={"node": NodeInfo(**who, cpus=node.get("cpus"), gpus=node.get("gpus"))})
            elif isinstance(event, RecordEvent):
                record = event.record
                if _fault_fires(env.get("HARNESS_RAY_FAULT"), record.cell_id):
                    # at the cell's end, not its start: Ray reports yielded events
                    # asynchronously, and a kill right after yielding "start" sometimes came
                    # before the driver had it (the task then looked lost before any cell)
                    os.kill(os.getpid(), signal.SIGKILL)
                update: dict[str, Any] = {"record": record.model_copy(update={"node": Node(**who)})}
                if record.artifact:
                    path = tmp / record.artifact
                    update["artifact_bytes"] = path.read_bytes()
                    path.unlink()
                event = event.model_copy(update=update)
            if event is not None:
                yield event
        code = proc.wait()
        with open(tmp / "worker.log", "rb") as fh:
            fh.seek(max(0, os.path.getsize(tmp / "worker.log") - LOG_TAIL_BYTES))
            tail = fh.read().decode("utf-8", "replace")
        yield Exit(code=code, log_tail=tail, node=NodeInfo(**who))
    finally:
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


# --- on the driver ------------------------------------------------------------------------------
class RayExecutor(WorkerExecutor):
    """``harness run --executor ray [--address auto|HOST:PORT]``. Connects (or starts a local
    Ray instance when no address is given and none is running); ``startup_s`` is what that
    took, reported apart from the run."""

    patience = MAX_FRUITLESS_ATTEMPTS  # a lost task may be Ray's trouble, not the job's: one more try

    def __init__(self, address: str | None = None, **init_kwargs: Any):
        super().__init__()
        ray = require_ray()
        self.ray = ray
        self.address = address
        start = time.perf_counter()
        self.started_ray = False
        if not ray.is_initialized():
            kwargs = {"include_dashboard": False, "log_to_driver": False, "logging_level": "WARNING", **init_kwargs}
            try:
                ray.init(address=address, **kwargs)
            except (ConnectionError, ValueError, RuntimeError) as err:
                raise FleetError(
                    f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
                    f"{str(err).splitlines()[0] if str(err) else type(err).__name__}"
                ) from None
            self.started_ray = True
        self.startup_s = time.perf_counter() - start
        self._task = ray.remote(max_retries=0)(run_job_on_node)
        from harness.execution.env import code_digest

        self._code = code_digest()  # this driver's harness, sent with every job (read once, not per job)

    # executor interface --------------------------------------------------------------------------
    def slot(self, job: Job, parallel: int) -> Slot:
        return Slot("ray", UNBOUNDED)  # Ray queues each task until a node has what it asked for

    def describe(self) -> dict[str, Any]:
        nodes = self.alive_nodes()
        return {
            "executor": "ray",
            "address": self.address,
            "ray_version": self.ray.__version__,
            "nodes": len(nodes),
            "startup_s": round(self.startup_s, 3),
        }

    def devices(self) -> list[str]:
        """cpu plus cuda:0..k-1, k the most GPUs one node has (what a cell can ask for)."""
        most = max((int(n["Resources"].get("GPU", 0)) for n in self.alive_nodes()), default=0)
        return ["cpu"] + [f"cuda:{i}" for i in range(most)]

    def shutdown(self) -> None:
        if self.started_ray:
            self.ray.shutdown()

    def launch(self, job: Job, cells: list[CellPayload]) -> RayAttempt | str:
        if job.stack != CURRENT_STACK:  # its overlay or interpreter is on the driver's disk, not the nodes'
            return f"stack {job.stack} runs on the local executor only (install it on each node and run there)"
        node = self._place(job)
        if node is None:
            return f"no alive Ray node can run a {job.device} job"
        return RayAttempt(self.ray, job, node, self._submit(job, node, cells))

    # internals -----------------------------------------------------------------------------------
    def alive_nodes(self) -> list[dict[str, Any]]:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return sorted(
            nodes,
            key=lambda n: (
                "node:__internal_head__" not in n["Resources"],
                n.get("NodeManagerAddress", ""),
                n["NodeID"],
            ),
        )

    def _place(self, job: Job) -> dict[str, Any] | None:
        need = "GPU" if job.device.startswith("cuda") else "CPU"
        eligible = [n for n in self.alive_nodes() if n["Resources"].get(need, 0) >= 1]
        return eligible[job.worker % len(eligible)] if eligible else None

    def _submit(self, job: Job, node: dict[str, Any], payloads: list[CellPayload]) -> Any:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        cpus = int(node["Resources"].get("CPU", 1))
        gpus = node["Resources"].get("GPU", 0)
        env = {k: v for k, v in os.environ.items() if k.startswith("HARNESS_")}
        cells = [c.model_dump(mode="json") for c in payloads]  # CellPayloads, as the worker's job file holds them
        if job.device.startswith("cuda"):
            options = {"num_gpus": 1, "num_cpus": 1}
            # Ray shows the task one GPU (CUDA_VISIBLE_DEVICES): it is cuda:0 there
            cells = [{**c, "axes": {**c["axes"], "device": "cuda:0"}} for c in cells]
        else:
            threads = max((c["axes"].get("threads") or cpus) for c in cells)
            options = {"num_cpus": max(1, min(threads, cpus))}
            env["OMP_NUM_THREADS"] = str(cpus)  # threads = auto: the node's CPUs, as Ray knows them
        doc = {"profile": job.profile, "isa": job.isa, "tf32": job.tf32, "cells": cells, "code": self._code}
        strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
        return self._task.options(scheduling_strategy=strategy, **options).remote(
            doc, env, {"cpus": cpus, "gpus": gpus}
        )


class RayAttempt:
    """One Ray task running a job's worker on a chosen node; its events arrive through a Ray
    generator, one at a time."""

    killed = "Ray task cancelled"

    def __init__(self, ray: Any, job: Job, node: dict[str, Any], gen: Any):
        self.ray, self.job, self.node, self.gen = ray, job, node, gen
        self.by_id = {c.cell_id: c for c in job.cells}
        self.place = f"Ray node {node['NodeID'][:12]} ({node.get('NodeManagerAddress', '?')})"
        self.where = f" on {self.place}"

    def next_event(self, timeout: float) -> Event | None:
        ready, _ = self.ray.wait([self.gen], timeout=timeout)
        if not ready:
            return None
        try:
            event = self.ray.get(next(self.gen))
        except StopIteration:
            return Lost(reason=f"the Ray task on {self.place} ended without a word")
        except self.ray.exceptions.RayError as err:  # the Ray worker or its node died
            return Lost(reason=f"lost on {self.place}: {type(err).__name__}: {_first_line(err)}")
        event = as_event(event)  # a node of another harness build may send its refusal as a plain dict
        if event is None:
            return Lost(reason=f"the Ray task on {self.place} sent something that is not an event")
        if isinstance(event, Exit):
            self._keep_log(event)
        return event

    def land(self, event: RecordEvent) -> Record:
        """Write the record's artifact into the run directory (the driver is the only writer)
        and give the record back the cell's own axes (a CUDA job ran on the task's cuda:0)."""
        from harness.store.run import atomic_write_bytes

        record = event.record
        cell = self.by_id[record.cell_id]
        if record.artifact:
            rel = f"artifacts/{cell.artifact_name}.npz"
            if record.artifact != rel:
                raise FleetError(
                    f"{record.cell_id}: a node sent an artifact path {record.artifact!r}; expected {rel!r}"
                )
            if event.artifact_bytes is None:
                raise FleetError(f"{record.cell_id}: a node sent the record of {rel!r} without its bytes")
            atomic_write_bytes(Path(self.job.run_dir) / rel, event.artifact_bytes)
        return record.model_copy(update={"axes": cell.axes})

    def failure(self, cell: CellPayload, status: str, reason: str) -> dict[str, Any]:
        return {**failure(cell, status, reason), "node": _node_ref(self.node)}

    def kill(self) -> None:
        try:
            self.ray.cancel(self.gen, force=True)
        except Exception:  # already finished, or its node is gone
            pass

    def close(self) -> None:
        """Nothing to release: a task that said its last cleans up its own folder on its node."""

    def _keep_log(self, event: Exit) -> None:
        if not event.log_tail:
            return
        node = (event.node.key if event.node else "node")[:12]
        name = f"worker-{node}-{worker_label(self.job)}.log"
        with open(Path(self.job.run_dir) / name, "a", encoding="utf-8") as fh:
            fh.write(event.log_tail)


def _node_ref(node: dict[str, Any]) -> dict[str, Any]:
    """A record's node, from Ray's node table (for cells whose worker never reported)."""
    return {
        "key": node["NodeID"],
        "hostname": node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?"),
        "ray_node_id": node["NodeID"],
    }


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else "")[:300]
