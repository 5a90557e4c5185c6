"""The executor protocol, its registry and the one event loop, without worker processes.

The loop (harness.execution.loop) is driven by scripted attempts: each yields typed events
as a worker (or a Ray task) would, so timeouts, a worker lost mid-cell, a refusal and a
worker that dies before its first cell are decided here in milliseconds, for every executor
at once. The real processes are covered by the runner, fault and fleet tests.
"""

from __future__ import annotations

import json
import re
import threading
import time
from typing import Any

import pytest

from harness.execution.executor import EXECUTOR_METHODS, Executor, ExecutorError, Job, require_executor
from harness.execution.executors import EXECUTORS, make_executor, names
from harness.execution.local import LocalProcessExecutor, WorkerStartError
from harness.execution.loop import WorkerExecutor
from harness.execution.protocol import (
    CellPayload,
    Done,
    Exit,
    Lost,
    NodeInfo,
    Ready,
    RecordEvent,
    Refused,
    Start,
    as_event,
    event_line,
    parse_event,
)
from harness.execution.ray_executor import RayExecutor
from harness.spec.kinds import UnknownName
from harness.spec.matrix import matrix_from_doc
from harness.store.records import Record
from tests.execution.fakes import InProcessExecutor

AXES = {
    "seed": 1,
    "dtype": "auto",
    "quantize_bits": None,
    "device": "cpu",
    "threads": 1,
    "batch_size": 1,
    "profile": "on",
    "worker": 0,
    "repeat": 0,
}


def cell(i: int) -> CellPayload:
    return CellPayload(
        cell_id=f"c{i}",
        spec_hash="s" * 64,
        config_id="cfg",
        task_name="t",
        kind="gpt",
        model="m",
        axes=AXES,
        task_doc={},
        artifact_name=f"c{i}",
    )


def job(n: int, timeout_s: float = 60.0) -> Job:
    return Job(
        run_dir="/nonexistent",
        device="cpu",
        profile="on",
        worker=0,
        cells=[cell(i) for i in range(n)],
        timeout_s=timeout_s,
    )


def ok(c: CellPayload) -> RecordEvent:
    return RecordEvent(record=Record.model_validate({**c.identity(), "status": "ok", "finished_at": 1.0}))


class Scripted:
    """An attempt that yields its script; ``"hang"`` waits until killed, like a stuck cell."""

    where = " on node n1"
    killed = "worker killed"

    def __init__(self, script: list[Any]):
        self.script = list(script)
        self.dead = threading.Event()
        self.closed = False

    def next_event(self, timeout: float):
        if self.dead.is_set():
            return Exit(code=-9)
        if self.script and self.script[0] == "hang":
            self.dead.wait(timeout)
            return None
        return self.script.pop(0) if self.script else Exit(code=0)

    def land(self, event: RecordEvent) -> Record:
        return event.record

    def failure(self, c: CellPayload, status: str, reason: str) -> dict[str, Any]:
        return {"cell_id": c.cell_id, "status": status, "reason": reason, "node": {"key": "n1"}}

    def kill(self) -> None:
        self.dead.set()

    def close(self) -> None:
        self.closed = True


class ScriptedExecutor(WorkerExecutor):
    """Each launch takes the next script; records which cells each attempt was given."""

    def __init__(self, *scripts: list[Any], patience: int = 1):
        super().__init__()
        self.scripts = list(scripts)
        self.patience = patience
        self.given: list[list[str]] = []
        self.attempts: list[Scripted] = []

    def launch(self, job: Job, cells: list[CellPayload]):
        self.given.append([c.cell_id for c in cells])
        script = self.scripts.pop(0)
        if isinstance(script, str):
            return script
        self.attempts.append(Scripted(script(cells) if callable(script) else script))
        return self.attempts[-1]


def drive(executor: WorkerExecutor, j: Job) -> tuple[list[dict], list[Ready]]:
    records: list[dict] = []
    readies: list[Ready] = []
    executor.run(j, lambda r: records.append(r.model_dump() if isinstance(r, Record) else r), readies.append)
    return records, readies


def whole_run(cells: list[CellPayload]) -> list[Any]:
    return [Ready(pid=1), *[e for c in cells for e in (Start(cell_id=c.cell_id, t=0.0), ok(c))], Done()]


# --- the protocol ---------------------------------------------------------------------------------
def test_the_protocol_names_every_method_the_runner_calls():
    assert EXECUTOR_METHODS == ("run", "devices", "slot", "stop", "describe", "shutdown")
    for cls in (LocalProcessExecutor, RayExecutor, InProcessExecutor):
        for name in EXECUTOR_METHODS:
            assert callable(getattr(cls, name, None)), f"{cls.__name__} lacks {name}"


def test_the_runner_calls_executors_only_through_the_protocol():
    """Every ``executor.X`` in the runner is a protocol method, and nothing probes for one."""
    import ast
    from pathlib import Path

    import harness.execution.runner as runner

    tree = ast.parse(Path(runner.__file__).read_text())
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "executor"
    }
    assert used and used <= set(EXECUTOR_METHODS), used - set(EXECUTOR_METHODS)
    probes = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("getattr", "hasattr")
    ]
    assert not probes


def test_an_incomplete_executor_is_refused_in_one_line_naming_what_it_lacks(tmp_path):
    from harness.execution.runner import run_matrix

    class RunOnly:
        def run(self, job, on_record, on_ready):
            raise AssertionError("never called")

        def describe(self):
            return {}

    matrix = matrix_from_doc(
        {
            "name": "p",
            "tasks": [
                {
                    "name": "gpt",
                    "task": {"model": "tiny:gpt2", "messages": [{"role": "user", "content": "hi"}], "seed": 1},
                }
            ],
        }
    )
    with pytest.raises(ExecutorError) as err:
        run_matrix(matrix, tmp_path / "run", progress=False, executor=RunOnly())
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("executor RunOnly lacks devices(), slot(), stop(), shutdown();")
    assert not (tmp_path / "run").exists()  # refused before any run directory exists


def test_a_method_that_is_not_callable_counts_as_missing():
    class Odd(InProcessExecutor):
        stop = None

        def run(self, job, on_record, on_ready): ...

    with pytest.raises(ExecutorError, match=r"lacks stop\(\);"):
        require_executor(Odd())
    assert isinstance(require_executor(LocalProcessExecutor()), LocalProcessExecutor)


def test_local_executor_answers_like_this_machine():
    from harness.execution.schedule import Slot

    local: Executor = LocalProcessExecutor()
    assert local.describe() == {"executor": "local"}
    assert local.slot(job(1), 3) == Slot("cpu", 3)
    assert "cpu" in local.devices()
    local.shutdown()  # nothing held: may be called whatever happened


# --- the registry --------------------------------------------------------------------------------
def test_executors_are_named_once_in_a_registry():
    assert names() == ["local", "ray"] == EXECUTORS.names()
    assert isinstance(make_executor("local"), LocalProcessExecutor)
    assert isinstance(make_executor("local", address=None), LocalProcessExecutor)  # an unset flag


def test_an_unknown_executor_or_option_is_one_line_saying_what_there_is():
    with pytest.raises(UnknownName, match=r"^unknown executor 'slurm'; available: local, ray$"):
        make_executor("slurm")
    with pytest.raises(
        ExecutorError,
        match=r"^executor 'local' takes no option 'address' "
        r"\(its options: python, env\); ray takes it$",
    ):
        make_executor("local", address="auto")


def test_a_registered_executor_is_built_and_checked(monkeypatch):
    monkeypatch.setitem(EXECUTORS._entries, "fake", "tests.execution.fakes:InProcessExecutor")
    assert "fake" in names() and isinstance(make_executor("fake"), InProcessExecutor)
    monkeypatch.setitem(EXECUTORS._entries, "broken", "tests.execution.test_executors:ScriptedExecutor")
    with pytest.raises(ExecutorError, match=r"lacks devices\(\), slot\(\), describe\(\), shutdown\(\);"):
        make_executor("broken")  # a WorkerExecutor without the rest of the protocol


# --- the events ----------------------------------------------------------------------------------
def test_fleet_fields_never_reach_a_workers_pipe():
    node = NodeInfo(key="n1", hostname="h", ray_node_id="n1", cpus=2, gpus=0)
    ready = Ready(pid=1, environment={"a": 1}).model_copy(update={"node": node})
    assert json.loads(event_line(ready)) == {"event": "ready", "pid": 1, "environment": {"a": 1}, "stack": "current"}
    record = ok(cell(0)).model_copy(update={"artifact_bytes": b"npz"})
    assert "artifact_bytes" not in json.loads(event_line(record))
    assert parse_event(event_line(Done())) == Done()
    assert parse_event(Exit(code=0).model_dump_json()) is None  # only the executor says a worker exited


def test_a_refusal_sent_as_a_plain_dict_is_still_understood():
    """A node of another harness build may not share the driver's classes."""
    refused = as_event({"event": "refused", "reason": "another build", "node": {"key": "k", "hostname": "h"}})
    assert isinstance(refused, Refused) and refused.node.key == "k"
    assert as_event({"event": "nonsense"}) is None
    assert as_event(Done()) == Done()


# --- the loop ------------------------------------------------------------------------------------
def test_a_whole_job_records_every_cell_and_passes_ready_on():
    ex = ScriptedExecutor(whole_run)
    records, readies = drive(ex, job(3))
    assert [r["cell_id"] for r in records] == ["c0", "c1", "c2"] and {r["status"] for r in records} == {"ok"}
    assert len(readies) == 1 and ex.given == [["c0", "c1", "c2"]] and ex.attempts[0].closed


def test_a_cell_past_its_timeout_is_recorded_and_a_new_worker_takes_the_rest():
    ex = ScriptedExecutor(
        [Ready(pid=1), Start(cell_id="c0", t=0), ok(cell(0)), Start(cell_id="c1", t=0), "hang"], whole_run
    )
    started = time.monotonic()
    records, _ = drive(ex, job(3, timeout_s=0.3))
    assert time.monotonic() - started < 5
    assert [(r["cell_id"], r["status"]) for r in records] == [("c0", "ok"), ("c1", "timeout"), ("c2", "ok")]
    assert records[1]["reason"] == "timed out after 0 s on node n1; worker killed"
    assert ex.given == [["c0", "c1", "c2"], ["c2"]] and ex.attempts[0].dead.is_set()


def test_a_worker_lost_mid_cell_fails_only_that_cell():
    ex = ScriptedExecutor([Start(cell_id="c0", t=0), Lost(reason="lost on node n1: RayError")], whole_run)
    records, _ = drive(ex, job(2))
    assert [(r["cell_id"], r["status"], r.get("reason")) for r in records] == [
        ("c0", "failed", "lost on node n1: RayError"),
        ("c1", "ok", None),
    ]


def test_a_worker_that_dies_mid_cell_names_how():
    ex = ScriptedExecutor([Start(cell_id="c0", t=0), Exit(code=-9)], whole_run)
    records, _ = drive(ex, job(2))
    assert records[0]["reason"] == "worker killed by signal 9 on node n1 while running this cell"
    assert records[0]["node"] == {"key": "n1"} and records[1]["status"] == "ok"


def test_a_refusal_fails_every_cell_left_with_the_nodes_reason():
    ex = ScriptedExecutor([Refused(reason="another harness build")])
    records, _ = drive(ex, job(2))
    assert [r["reason"] for r in records] == ["not run on node n1: another harness build"] * 2
    assert len(ex.given) == 1  # a refusal is not retried


def test_workers_that_never_run_a_cell_give_up_after_the_executors_patience():
    tail = Exit(code=1, log_tail="Traceback\nImportError: no torch\n\n")
    ex = ScriptedExecutor([tail], [tail], [tail], patience=2)
    records, _ = drive(ex, job(2))
    assert len(ex.given) == 2  # two fruitless attempts, then the cells are recorded
    why = "not run: worker exited with code 1 on node n1: ImportError: no torch"  # the log's last line
    assert [r["reason"] for r in records] == [why] * 2


def test_no_worker_can_start_fails_every_cell_with_no_node():
    records, _ = drive(ScriptedExecutor("no alive node can run a cpu job"), job(2))
    assert [(r["status"], r["reason"], r["node"]) for r in records] == [
        ("failed", "no alive node can run a cpu job", None)
    ] * 2


def test_a_local_worker_that_cannot_start_ends_the_run_in_one_line(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    j = Job(run_dir=str(tmp_path), device="cpu", profile="on", worker=0, cells=[cell(0)], timeout_s=60)
    line = f"worker exited with code 3 before starting; see its log in {tmp_path}"
    with pytest.raises(WorkerStartError, match=f"^{re.escape(line)}$"):
        LocalProcessExecutor(python=str(fake)).run(j, lambda r: None, lambda e: None)
    assert not list(tmp_path.glob("job-*.json"))  # the job file is removed whatever happened


def test_stop_ends_a_live_worker_and_starts_no_more():
    ex = ScriptedExecutor([Start(cell_id="c0", t=0), "hang"], whole_run)
    records: list[dict] = []
    thread = threading.Thread(target=ex.run, args=(job(2), records.append, lambda e: None))
    thread.start()
    while not ex.attempts:
        time.sleep(0.01)
    ex.stop()
    thread.join(5)
    assert not thread.is_alive() and ex.attempts[0].dead.is_set()
    assert len(ex.given) == 1 and records == []  # nothing more was started, no record made up


# --- the Ray node's side, without a cluster ---------------------------------------------------------
@pytest.fixture
def on_a_node(monkeypatch):
    """``run_job_on_node`` as a Ray task would run it, its node id faked (no cluster started)."""
    ray = pytest.importorskip("ray")

    class Context:
        def get_node_id(self):
            return "n" * 56

    monkeypatch.setattr(ray, "get_runtime_context", lambda: Context())


def test_a_ray_node_starts_its_worker_with_the_library_environment(on_a_node, monkeypatch):
    """The node used to spell four of the defaults itself (no TRANSFORMERS_VERBOSITY or
    DIFFUSERS_VERBOSITY); it now takes harness.hubenv's, keeping what the operator set."""
    import subprocess

    from harness.execution.env import code_digest
    from harness.execution.ray_executor import run_job_on_node
    from harness.hubenv import LIBRARY_ENV

    seen: dict[str, str] = {}

    class Started(Exception):
        pass

    def popen(args, env, **kw):
        seen.update(env)
        raise Started

    monkeypatch.setattr(subprocess, "Popen", popen)
    for key in LIBRARY_ENV:  # the test suite itself starts from these defaults
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    with pytest.raises(Started):
        next(run_job_on_node({"profile": "on", "cells": [], "code": code_digest()}, {"HARNESS_X": "1"}, {"cpus": 2}))
    assert seen["TRANSFORMERS_VERBOSITY"] == "info" and seen["HARNESS_X"] == "1"
    assert {k: seen[k] for k in LIBRARY_ENV if k != "TRANSFORMERS_VERBOSITY"} == {
        k: v for k, v in LIBRARY_ENV.items() if k != "TRANSFORMERS_VERBOSITY"
    }


def test_a_ray_node_of_another_build_sends_a_typed_refusal(on_a_node):
    from harness.execution.ray_executor import run_job_on_node

    events = list(run_job_on_node({"profile": "on", "cells": [], "code": "0" * 64}, {}, {}))
    assert len(events) == 1 and isinstance(events[0], Refused)
    assert "another harness build" in events[0].reason and events[0].node.ray_node_id == "n" * 56
