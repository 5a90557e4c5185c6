"""Issue 20's closing measure: a new executor is one class and one registration, no harness file.

``OneCellPerWorker`` gives every cell a fresh worker process (isolation at the price of a model
load per cell: a node operator's way to rule out state carried between tasks). It is the local
executor with ``launch`` narrowed to one cell; the shared event loop (harness.execution.loop)
sees the worker end after it and starts the next, as it does after any worker that ends early.
Registered here at run time, ``harness run --executor one-cell`` builds it: the CLI's choices
come from the registry.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.execution.executors import EXECUTORS
from harness.execution.local import LocalProcessExecutor
from harness.spec.matrix import dump_matrix
from harness.store.run import RunStore

TASK = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "hello world"}],
    "seed": 1,
    "generation_config": {"max_new_tokens": 6, "do_sample": True, "top_k": 20, "top_p": 1.0},
}


class OneCellPerWorker(LocalProcessExecutor):
    """A fresh worker process for every cell."""

    def launch(self, job, cells):
        return super().launch(job, cells[:1])

    def describe(self):
        return {"executor": "one-cell"}


@pytest.fixture
def one_cell():
    EXECUTORS.register("one-cell", OneCellPerWorker)
    yield
    EXECUTORS.unregister("one-cell")


def test_a_registered_executor_runs_a_matrix_from_the_cli(tmp_path: Path, one_cell) -> None:
    from harness.cli.main import main

    matrix = tmp_path / "m.toml"
    matrix.write_text(
        dump_matrix(
            {
                "schema_version": 1,
                "name": "toy",
                "repeats": 3,
                "workers": 1,
                "timeout_s": 120,
                "tasks": [{"name": "gpt", "task": TASK}],
                "axes": {"threads": [1]},
            }
        )
    )
    out = tmp_path / "run"
    assert main(["run", str(matrix), "--out", str(out), "--executor", "one-cell", "--no-progress"]) == 0
    records = RunStore(out).load_records().records
    assert [r.status for r in records] == ["ok"] * 3
    assert len({r.worker_pid for r in records}) == 3  # each cell in its own process
    assert len({r.digests["output"] for r in records}) == 1  # and still the same bytes


def test_the_cli_refuses_an_executor_nobody_registered(capsys) -> None:
    from harness.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["run", "m.toml", "--executor", "one-cell"])
    assert exit_.value.code == 2 and "invalid choice: 'one-cell'" in capsys.readouterr().err
