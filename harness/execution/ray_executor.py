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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.execution.schedule import UNBOUNDED, Slot

LOG_TAIL_BYTES = 64 * 1024
POLL_S = 0.25
MAX_FRUITLESS_ATTEMPTS = 2  # tasks in a row that ran no cell before the job's cells are failed


class FleetError(HarnessError, RuntimeError):
    """Ray missing, a cluster that cannot be reached, or a job no node can run."""


def require_ray():
    try:
        import ray
    except ImportError:
        raise FleetError("--executor ray needs Ray, which is not installed: pip install -e '.[fleet]'") from None
    return ray


# --- on the node --------------------------------------------------------------------------------
def _fault_fires(spec: str | None, cell_id: str) -> bool:
    if not spec or not spec.startswith("kill:"):
        return False
    pattern, _, once = spec[len("kill:"):].partition("@")
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
    from harness.execution.env import code_digest

    here = code_digest()
    if driver_code == here:
        return None
    return (f"this node runs another harness build (code {here[:12]}, the driver's {str(driver_code)[:12]}); "
            f"install the driver's harness on every node")


def run_job_on_node(job: dict[str, Any], env: dict[str, str], node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The body of the Ray task: start the worker on this node, pass its events on, with each
    record's artifact bytes; end with an ``exit`` event (exit code and the log's tail)."""
    import shutil
    import signal
    import socket
    import subprocess
    import sys
    import tempfile

    import ray

    node_id = ray.get_runtime_context().get_node_id()
    who = {"key": node_id, "hostname": socket.gethostname(), "ray_node_id": node_id}
    refusal = _code_mismatch(job.get("code"))
    if refusal:
        yield {"event": "refused", "reason": refusal, "node": who}
        return
    tmp = Path(tempfile.mkdtemp(prefix="harness-ray-job-"))
    proc = None
    try:
        (tmp / "artifacts").mkdir()
        job_file = tmp / "job.json"
        worker_job = {k: v for k, v in job.items() if k != "code"}
        job_file.write_text(json.dumps({**worker_job, "run_dir": str(tmp), "parent_pid": os.getpid()}))
        full_env = {**os.environ, **env}
        for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1"),
                           ("HF_HUB_DISABLE_PROGRESS_BARS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
            full_env.setdefault(key, value)
        with open(tmp / "worker.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "harness.execution.worker", str(job_file)],
                                    stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, env=full_env,
                                    start_new_session=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = event.get("event")
            if kind == "ready":
                event["node"] = {**who, "cpus": node.get("cpus"), "gpus": node.get("gpus")}
            elif kind == "record":
                record = event["record"]
                if _fault_fires(env.get("HARNESS_RAY_FAULT"), record["cell_id"]):
                    # at the cell's end, not its start: Ray reports yielded events
                    # asynchronously, and a kill right after yielding "start" sometimes came
                    # before the driver had it (the task then looked lost before any cell)
                    os.kill(os.getpid(), signal.SIGKILL)
                record["node"] = who
                if record.get("artifact"):
                    path = tmp / record["artifact"]
                    event["artifact_bytes"] = path.read_bytes()
                    path.unlink()
            yield event
        code = proc.wait()
        with open(tmp / "worker.log", "rb") as fh:
            fh.seek(max(0, os.path.getsize(tmp / "worker.log") - LOG_TAIL_BYTES))
            tail = fh.read().decode("utf-8", "replace")
        yield {"event": "exit", "code": code, "log_tail": tail, "node": who}
    finally:
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


# --- on the driver ------------------------------------------------------------------------------
class RayExecutor:
    """``harness run --executor ray [--address auto|HOST:PORT]``. Connects (or starts a local
    Ray instance when no address is given and none is running); ``startup_s`` is what that
    took, reported apart from the run."""

    def __init__(self, address: str | None = None, **init_kwargs: Any):
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
                raise FleetError(f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
                                 f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from None
            self.started_ray = True
        self.startup_s = time.perf_counter() - start
        self._task = ray.remote(max_retries=0)(run_job_on_node)
        from harness.execution.env import code_digest

        self._code = code_digest()  # this driver's harness, sent with every job (read once, not per job)
        self._stopped = threading.Event()
        self._live: set[Any] = set()
        self._guard = threading.Lock()

    # executor interface --------------------------------------------------------------------------
    def slot(self, job: Any, parallel: int) -> Slot:
        return Slot("ray", UNBOUNDED)  # Ray queues each task until a node has what it asked for

    def describe(self) -> dict[str, Any]:
        nodes = self.alive_nodes()
        return {"executor": "ray", "address": self.address, "ray_version": self.ray.__version__,
                "nodes": len(nodes), "startup_s": round(self.startup_s, 3)}

    def devices(self) -> list[str]:
        """cpu plus cuda:0..k-1, k the most GPUs one node has (what a cell can ask for)."""
        most = max((int(n["Resources"].get("GPU", 0)) for n in self.alive_nodes()), default=0)
        return ["cpu"] + [f"cuda:{i}" for i in range(most)]

    def stop(self) -> None:
        self._stopped.set()
        with self._guard:
            live = list(self._live)
        for gen in live:
            self._cancel(gen)

    def shutdown(self) -> None:
        if self.started_ray:
            self.ray.shutdown()

    def run(self, job: Any, on_record: Callable[[dict[str, Any]], None],
            on_ready: Callable[[dict[str, Any]], None] | None = None) -> None:
        from harness.execution.runner import _failure

        by_id = {c.cell_id: c for c in job.cells}
        remaining = list(job.cells)
        limit = job.timeout_s if job.timeout_s < threading.TIMEOUT_MAX / 2 else None
        fruitless = 0
        while remaining and not self._stopped.is_set():
            node = self._place(job)
            if node is None:
                for cell in remaining:
                    on_record({**_failure(cell, "failed", f"no alive Ray node can run a {job.device} job"), "node": None})
                return
            before = len(remaining)
            remaining, problem = self._attempt(job, node, remaining, by_id, limit, on_record, on_ready)
            fruitless = fruitless + 1 if len(remaining) == before else 0
            if remaining and fruitless >= MAX_FRUITLESS_ATTEMPTS:
                for cell in remaining:
                    on_record({**_failure(cell, "failed", f"not run: {problem}"), "node": _node_ref(node)})
                return

    # internals -----------------------------------------------------------------------------------
    def alive_nodes(self) -> list[dict[str, Any]]:
        nodes = [n for n in self.ray.nodes() if n.get("Alive")]
        return sorted(nodes, key=lambda n: ("node:__internal_head__" not in n["Resources"], n.get("NodeManagerAddress", ""),
                                            n["NodeID"]))

    def _place(self, job: Any) -> dict[str, Any] | None:
        need = "GPU" if job.device.startswith("cuda") else "CPU"
        eligible = [n for n in self.alive_nodes() if n["Resources"].get(need, 0) >= 1]
        return eligible[job.worker % len(eligible)] if eligible else None

    def _submit(self, job: Any, node: dict[str, Any], payloads: list[Any]):
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
        gen = self._task.options(scheduling_strategy=strategy, **options).remote(doc, env, {"cpus": cpus, "gpus": gpus})
        with self._guard:
            self._live.add(gen)
        return gen

    def _cancel(self, gen: Any) -> None:
        try:
            self.ray.cancel(gen, force=True)
        except Exception:  # already finished, or its node is gone
            pass

    def _attempt(self, job: Any, node: dict[str, Any], remaining: list[Any], by_id: dict[str, Any],
                 limit: float | None, on_record: Callable[[dict[str, Any]], None],
                 on_ready: Callable[[dict[str, Any]], None] | None) -> tuple[list[dict[str, Any]], str]:
        """One Ray task over ``remaining``; returns what is still to run and, when the task
        ended early, why."""
        from harness.execution.runner import _failure as failure

        def _failure(cell: dict[str, Any], status: str, reason: str) -> dict[str, Any]:
            return {**failure(cell, status, reason), "node": _node_ref(node)}

        gen = self._submit(job, node, remaining)
        in_flight: dict[str, Any] | None = None
        deadline: float | None = None
        where = f"Ray node {node['NodeID'][:12]} ({node.get('NodeManagerAddress', '?')})"
        try:
            while True:
                if self._stopped.is_set():
                    self._cancel(gen)
                    return remaining, "stopped"
                ready, _ = self.ray.wait([gen], timeout=POLL_S)
                if not ready:
                    if deadline is not None and time.monotonic() > deadline and in_flight is not None:
                        self._cancel(gen)
                        on_record(_failure(in_flight, "timeout", f"timed out after {job.timeout_s:.0f} s on {where}; "
                                                                 f"Ray task cancelled"))
                        return _after(remaining, in_flight), "timeout"
                    continue
                try:
                    event = self.ray.get(next(gen))
                except StopIteration:
                    return remaining, f"the Ray task on {where} ended without a word"
                except self.ray.exceptions.RayError as err:  # the Ray worker or its node died
                    reason = f"lost on {where}: {type(err).__name__}: {_first_line(err)}"
                    if in_flight is None:
                        return remaining, reason
                    on_record(_failure(in_flight, "failed", reason))
                    return _after(remaining, in_flight), reason
                kind = event.get("event")
                if kind == "ready" and on_ready is not None:
                    on_ready(event)
                elif kind == "start":
                    in_flight = by_id[event["cell_id"]]
                    deadline = None if limit is None else time.monotonic() + limit
                elif kind == "record":
                    on_record(self._land(job, by_id, event))
                    remaining = [c for c in remaining if c.cell_id != event["record"]["cell_id"]]
                    in_flight, deadline = None, None
                elif kind == "refused":
                    reason = f"not run on {where}: {event['reason']}"
                    for cell in remaining:
                        on_record(_failure(cell, "failed", reason))
                    return [], reason
                elif kind == "exit":
                    self._keep_log(job, event)
                    code = event["code"]
                    how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
                    if in_flight is not None:
                        on_record(_failure(in_flight, "failed", f"worker {how} on {where} while running this cell"))
                        return _after(remaining, in_flight), how
                    last = next((ln for ln in reversed(event.get("log_tail", "").splitlines()) if ln.strip()), "")
                    return remaining, f"worker {how} on {where}" + (f": {last[:300]}" if remaining and last else "")
        finally:
            with self._guard:
                self._live.discard(gen)

    @staticmethod
    def _land(job: Any, by_id: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
        """Write the record's artifact into the run directory (the driver is the only writer)
        and give the record back the cell's own axes (a CUDA job ran on the task's cuda:0)."""
        from harness.store.run import atomic_write_bytes

        record = event["record"]
        cell = by_id[record["cell_id"]]
        if record.get("artifact"):
            rel = f"artifacts/{cell.artifact_name}.npz"
            if record["artifact"] != rel:
                raise FleetError(f"{record['cell_id']}: a node sent an artifact path {record['artifact']!r}; "
                                 f"expected {rel!r}")
            atomic_write_bytes(Path(job.run_dir) / rel, event["artifact_bytes"])
        return {**record, "axes": cell.axes.model_dump()}

    @staticmethod
    def _keep_log(job: Any, event: dict[str, Any]) -> None:
        tail = event.get("log_tail") or ""
        if not tail:
            return
        from harness.execution.runner import worker_label

        node = (event.get("node") or {}).get("key", "node")[:12]
        name = f"worker-{node}-{worker_label(job)}.log"
        with open(Path(job.run_dir) / name, "a", encoding="utf-8") as fh:
            fh.write(tail)


def _node_ref(node: dict[str, Any]) -> dict[str, Any]:
    """A record's node, from Ray's node table (for cells whose worker never reported)."""
    return {"key": node["NodeID"], "hostname": node.get("NodeManagerHostname") or node.get("NodeManagerAddress", "?"),
            "ray_node_id": node["NodeID"]}


def _after(remaining: list[Any], cell: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells after ``cell``: it was run (or lost) and is recorded."""
    return remaining[remaining.index(cell) + 1:]


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else "")[:300]
