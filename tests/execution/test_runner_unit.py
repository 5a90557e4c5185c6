"""The runner without worker processes (an in-process fake Executor), and a fifth task kind
run end to end through real workers.

The fake executor answers each cell with a record made here, so scheduling, resume, the
manifest and the checked-metadata gate are tested in milliseconds, with no torch import.
The toy kind (tests/execution/toy_kind.py) proves that a new kind is one engine file plus one
registry line: registered through ``HARNESS_KINDS``, it is validated, expanded, executed in
worker processes, analysed and reported without any other change.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from harness.errors import StoreError
from harness.execution.runner import run_matrix
from harness.spec.kinds import KINDS, UnknownName
from harness.spec.matrix import matrix_from_doc
from harness.store.run import RunStore
from tests.execution.fakes import InProcessExecutor

TOY_ENV = "tests.execution.toy_kind:TOY"


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setenv("HARNESS_KINDS", TOY_ENV)
    yield
    monkeypatch.delenv("HARNESS_KINDS")
    assert "toy" not in KINDS  # the kind leaves with its environment variable


def toy_matrix(**over: Any):
    doc = {
        "name": "toy",
        "repeats": 2,
        "workers": 2,
        "timeout_s": 60,
        "tasks": [{"name": "echo", "kind": "toy", "task": {"text": "hello"}}],
        "axes": {"seed": [1, 2], "threads": [1], "batch_size": [1]},
        **over,
    }
    return matrix_from_doc(doc)


FakeExecutor = InProcessExecutor  # an in-process Executor: each cell's record is ``outcome(cell)``


def test_runner_sends_one_job_per_device_profile_and_worker(toy, tmp_path):
    fake = FakeExecutor()
    summary = run_matrix(toy_matrix(), tmp_path / "run", progress=False, executor=fake)
    assert summary.total == 8 and summary.executed == 8 and summary.statuses == {"ok": 8}
    assert [(j.device, j.profile, j.worker) for j in fake.jobs] == [("cpu", "on", 0), ("cpu", "on", 1)]
    first = fake.jobs[0].cells
    assert [c.cell_id for c in first] == [
        "echo/auto/qnone/seed1/cpu/t1/b1/pon/warm/w0/r0",
        "echo/auto/qnone/seed1/cpu/t1/b1/pon/warm/w0/r1",
        "echo/auto/qnone/seed2/cpu/t1/b1/pon/warm/w0/r0",
        "echo/auto/qnone/seed2/cpu/t1/b1/pon/warm/w0/r1",
    ]
    assert first[0].task_doc == {
        "model": "toy:echo",
        "text": "hello",
        "seed": 1,
        "dtype": "auto",
        "quantize_bits": None,
    }
    store = RunStore(tmp_path / "run")
    manifest = store.manifest()
    assert manifest.status == "complete" and manifest.environment == {"executor": "fake"}
    assert manifest.matrix_name == "toy" and manifest.tiny_models == {}
    assert len(store.load_records().records) == 8


def test_resume_reruns_only_cells_without_a_final_record(toy, tmp_path):
    flaky = FakeExecutor(
        lambda c: (
            {"status": "failed", "reason": "boom"}
            if c.axes.seed == 2
            else {"status": "ok", "digests": {"output": "d" * 64}}
        )
    )
    first = run_matrix(toy_matrix(), tmp_path / "run", progress=False, executor=flaky)
    assert first.statuses == {"ok": 4, "failed": 4}
    again = FakeExecutor()
    second = run_matrix(toy_matrix(), tmp_path / "run", progress=False, executor=again, resume=True)
    assert second.resumed_skipped == 4 and second.executed == 4
    assert {c.axes.seed for j in again.jobs for c in j.cells} == {2}
    assert len(RunStore(tmp_path / "run").load_records().records) == 12  # the failed attempts stay as history


def test_resume_refuses_records_from_another_harness_version(toy, tmp_path):
    run_matrix(toy_matrix(), tmp_path / "run", progress=False, executor=FakeExecutor())
    path = tmp_path / "run" / "manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "harness_version": "0.0.1"}))
    with pytest.raises(StoreError, match=r"cannot resume: made by harness 0\.0\.1, this is"):
        run_matrix(toy_matrix(), tmp_path / "run", progress=False, executor=FakeExecutor(), resume=True)
    RunStore(tmp_path / "run").lock()  # the refused resume released the lock


def test_an_unknown_kind_is_one_line_naming_the_available_ones():
    with pytest.raises(UnknownName, match=r"unknown task kind 'toy'; available: audio, gpt, audioldm, chain"):
        KINDS.get("toy")
    with pytest.raises(ValueError, match=r"unknown task kind 'toy'; available: audio, gpt, audioldm, chain"):
        toy_matrix()


@pytest.mark.slow
def test_a_fifth_kind_is_one_engine_file_and_one_registry_line(toy, tmp_path):
    """The toy kind through the real runner, worker processes, analysis and reports."""
    from harness.analysis.run import analyze_run
    from harness.report.run import render_markdown

    summary = run_matrix(toy_matrix(workers=2, repeats=2), tmp_path / "run", progress=False)
    assert summary.statuses == {"ok": 8}, summary.problems
    records = RunStore(tmp_path / "run").load_records().records
    assert {r.kind for r in records} == {"toy"}
    assert all(r.digests["tokens"] == r.digests["token_ids"] for r in records)  # its declared discrete array
    analysis = analyze_run(tmp_path / "run", verify_artifacts=True)
    assert [(c.config_id, c.verdict) for c in analysis.configs] == [("echo/auto/qnone/cpu/pon", "ready")]
    assert all(g.passed for g in analysis.gates)
    assert "echo (toy)" in render_markdown(analysis)


def test_new_kind_touches_only_its_engine_file_and_registry_line():
    """What "adding a kind" needs, checked on the toy kind: its KindSpec names only objects of
    its own file (task model, engine) and shared defaults of the harness."""
    from tests.execution.toy_kind import TOY

    own = Path(__file__).with_name("toy_kind.py").read_text()
    for ref in (TOY.task_model, TOY.engine):
        module, _, name = ref.partition(":")
        assert module == "tests.execution.toy_kind" and f"class {name}" in own
    assert TOY.model_key == "harness.engines.base:model_key"
