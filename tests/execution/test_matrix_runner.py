"""Matrices and the runner end to end on the tiny models: gates, planted non-determinism,
SIGKILL mid-run and --resume, a second writer refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.spec.matrix import MatrixError, dump_matrix, expand, matrix_from_doc
from harness.store.run import RunStore

ROOT = Path(__file__).parent.parent.parent
GPT_TASK = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "hello world"}],
    "seed": 1,
    "generation_config": {"max_new_tokens": 8, "do_sample": True, "top_k": 20, "top_p": 1.0},
}


def mini_matrix(tmp_path: Path, **over) -> Path:
    doc = {
        "schema_version": 1,
        "name": "mini",
        "repeats": 2,
        "workers": 2,
        "timeout_s": 60,
        "tasks": [{"name": "gpt", "task": GPT_TASK}],
        "axes": {"seed": [1, 2], "threads": [1], "batch_size": [1]},
        **over,
    }
    path = tmp_path / "mini.toml"
    path.write_text(_toml(doc))
    return path


def _toml(doc: dict) -> str:
    return dump_matrix(doc)


def test_smoke_matrix_expands_with_stable_ids():
    from harness.spec.matrix import load_matrix

    m = load_matrix(ROOT / "matrices" / "smoke.toml")
    cells = expand(m)
    # MusicGen: cold and warm at batch 1, warm at batch 2; the next narrower kernels at 1 thread,
    # batch 1, warm (the cell id keeps the relative name, on any machine)
    assert len(cells) == 288
    below = [c for c in cells if c.axes.isa == "below-native"]
    assert len(below) == 48 and all(
        c.axes.threads == 1 and c.axes.batch_size == 1 and c.axes.load == "warm" and "/isa-below-native/" in c.cell_id
        for c in below
    )
    assert cells[0].cell_id == "musicgen-pop/float32/qnone/seed42/cpu/t1/b1/pon/cold/w0/r0"
    assert {c.axes.load for c in cells if c.task_name == "gpt-chatbot"} == {"warm"}
    assert not any(c.axes.load == "cold" and c.axes.batch_size == 2 for c in cells)
    assert len({c.cell_id for c in cells}) == len(cells)
    assert not any(c.axes.dtype == "bfloat16" and c.axes.quantize_bits == 8 for c in cells)
    again = expand(load_matrix(ROOT / "matrices" / "smoke.toml"))
    assert [(c.cell_id, c.spec_hash) for c in cells] == [(c.cell_id, c.spec_hash) for c in again]
    # repeats and workers share a spec hash; other axes do not
    by_spec = {}
    for c in cells:
        by_spec.setdefault(c.spec_hash, set()).add((c.axes.worker, c.axes.repeat))
    assert all(v == {(0, 0), (0, 1), (1, 0), (1, 1)} for v in by_spec.values())


def test_impossible_cells_are_skipped_with_a_reason(tmp_path):
    m = matrix_from_doc(
        {
            "name": "gpu",
            "repeats": 1,
            "workers": 1,
            "tasks": [{"name": "gpt", "task": GPT_TASK}],
            "axes": {"device": ["cpu", "cuda:0"]},
        }
    )
    cells = expand(m, ["cpu"])
    reasons = {c.axes.device: c.skip_reason for c in cells}
    assert reasons == {"cpu": None, "cuda:0": "cuda:0 is not available on this machine"}


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"name": "x", "tasks": []}, "tasks"),
        ({"name": "x", "tasks": [{"name": "a", "task": {**GPT_TASK, "temprature": 1}}]}, "temprature: unknown field"),
        ({"name": "x", "tasks": [{"name": "a", "task": GPT_TASK}], "axes": {"dtype": ["float64"]}}, "axes.dtype"),
        ({"name": "x", "tasks": [{"name": "a", "task": GPT_TASK}], "exclude": [{"colour": 1}]}, "unknown key 'colour'"),
        ({"name": "x", "schema_version": 9, "tasks": [{"name": "a", "task": GPT_TASK}]}, "newer"),
    ],
)
def test_bad_matrices_name_the_problem(doc, message):
    with pytest.raises(MatrixError, match=message):
        matrix_from_doc(doc)


def test_huge_matrix_is_refused():
    m = matrix_from_doc(
        {
            "name": "big",
            "tasks": [{"name": "a", "task": GPT_TASK}],
            "axes": {"seed": list(range(5000)), "threads": [1, 2, 3]},
        }
    )
    with pytest.raises(MatrixError, match="more than"):
        expand(m)


@pytest.mark.slow
def test_run_gate_passes_then_planted_nondeterminism_fails(cli, tmp_path, tiny_gpt2):
    from tests.report.test_junit import check_junit, outcomes

    matrix = mini_matrix(tmp_path)
    ok = cli("run", str(matrix), "--out", str(tmp_path / "ok"), "--no-progress", "--junit", str(tmp_path / "ok.xml"))
    assert ok.returncode == 0, ok.stderr
    for name in ("report.md", "report.html", "report.json"):
        assert (tmp_path / "ok" / name).exists()
    report = json.loads((tmp_path / "ok" / "report.json").read_text())
    assert [c["verdict"] for c in report["configs"]] == ["ready"]
    suite = next(iter(check_junit(tmp_path / "ok.xml")))  # the gate passed: so does every testcase
    assert (suite.tests, suite.failures, suite.errors) == (3, 0, 0)  # repeat, process, evidence
    env = {
        "HARNESS_ENGINES": "gpt=tests.doubles:NonDeterministicTextEngine",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    junit = tmp_path / "ci" / "junit.xml"
    bad = cli("run", str(matrix), "--out", str(tmp_path / "bad"), "--no-progress", "--junit", str(junit), env=env)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "GATE FAILED gpt/auto/qnone/cpu/pon: not_ready" in bad.stderr
    assert "divergent across repeat, process" in bad.stderr
    assert f"junit {junit}" in bad.stdout
    got = outcomes(check_junit(junit))
    kind, message, text = got[("mini.gpt/auto/qnone/cpu/pon", "repeat")]
    assert kind == "failure" and message.startswith("not_ready: repeat divergent (first divergent step ")
    assert "reason: divergent across repeat, process" in text and "cells: gpt/auto/qnone/seed" in text
    assert got[("mini.gpt/auto/qnone/cpu/pon", "process")][0] == "failure"
    # harness report writes the same file from the run directory; without --junit it never
    # imports the JUnit writer (nothing here may slow a run or report that does not ask for it)
    again = cli("report", str(tmp_path / "bad"), "--junit", str(tmp_path / "again.xml"))
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.xml").read_bytes() == junit.read_bytes()
    import subprocess
    import sys

    probe = (
        "import sys; from harness.cli.main import main; main(['report', sys.argv[1], '--formats', 'json']); "
        "assert 'harness.report.junit' not in sys.modules, 'imported without --junit'"
    )
    res = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "ok")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert res.returncode == 0, res.stderr
    # harness compare: one testcase per configuration of A, failing when B does not reproduce it
    cmp = cli("compare", str(tmp_path / "ok"), str(tmp_path / "bad"), "--junit", str(tmp_path / "cmp.xml"))
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr  # its exit code still gates costs only
    got = outcomes(check_junit(tmp_path / "cmp.xml"))
    assert {k: v[0] for k, v in got.items()} == {("mini", "gpt/auto/qnone/cpu/pon"): "failure"}


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_loses_nothing(cli, tmp_path, tiny_gpt2):
    matrix = mini_matrix(tmp_path)
    run_dir = tmp_path / "run"
    once = tmp_path / "killed-once"
    env = {"HARNESS_FAULT": f"kill:gpt/*/seed2/*/w0/r0@{once}"}
    first = cli("run", str(matrix), "--out", str(run_dir), "--no-progress", env=env)
    assert once.exists(), first.stderr
    records = RunStore(run_dir).load_records().records
    assert len(records) == 8  # the run went on after the kill
    killed = [r for r in records if r.status != "ok"]
    assert [(r.cell_id, r.status) for r in killed] == [("gpt/auto/qnone/seed2/cpu/t1/b1/pon/warm/w0/r0", "failed")]
    assert "killed by signal 9" in killed[0].reason
    assert first.returncode == 1  # a failed cell fails the gate
    resumed = cli("run", str(matrix), "--out", str(run_dir), "--no-progress", "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "1 executed, 7 already done" in resumed.stdout
    records = RunStore(run_dir).load_records().records
    ok = [r.cell_id for r in records if r.status == "ok"]
    assert len(ok) == 8 and len(set(ok)) == 8  # every cell once, none duplicated
    assert len(records) == 9  # the failed attempt stays as history


@pytest.mark.slow
def test_hanging_cell_times_out_and_the_run_goes_on(cli, tmp_path, tiny_gpt2):
    # 15 s, not 5: the cell after the hung one starts a fresh worker whose clock includes
    # importing torch and loading the model, which took over 5 s on a loaded 2-core machine
    matrix = mini_matrix(tmp_path, timeout_s=15, workers=1, repeats=1)
    res = cli(
        "run", str(matrix), "--out", str(tmp_path / "run"), "--no-progress", env={"HARNESS_FAULT": "hang:gpt/*/seed1/*"}
    )
    records = RunStore(tmp_path / "run").load_records().records
    assert {r.cell_id.split("/")[3]: r.status for r in records} == {"seed1": "timeout", "seed2": "ok"}
    assert res.returncode == 1 and "timed out after 15 s" in res.stderr


def test_resume_refuses_another_matrix_and_a_locked_run(cli, tmp_path):
    run_dir = tmp_path / "run"
    holder = RunStore.create(run_dir, {"run_id": "x", "matrix_digest": "other"})
    res = cli("run", str(mini_matrix(tmp_path)), "--out", str(run_dir), "--resume", "--no-progress")
    assert res.returncode == 2 and "another harness process is writing this run" in res.stderr
    holder.unlock()
    res = cli("run", str(mini_matrix(tmp_path)), "--out", str(run_dir), "--resume", "--no-progress")
    assert res.returncode == 2 and "different matrix" in res.stderr
