"""`harness replay TASK CANDIDATE_DIR` as a user types it: exit 0 accepted, 1 rejected or not
replayable (never accepted by default), 2 bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POP = ROOT / "matrices" / "tasks" / "tiny-musicgen-pop.json"


def _task(tmp_path: Path, **gc) -> Path:
    doc = json.loads(POP.read_text())
    doc["generation_config"].update(max_new_tokens=16, **gc)
    path = tmp_path / "task.json"
    path.write_text(json.dumps(doc))
    return path


def _one_line_error(res, *needles: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]


def test_bad_candidate_folders_are_one_line_errors(cli, tmp_path):
    task = _task(tmp_path)
    _one_line_error(cli("replay", str(task), str(tmp_path / "missing")), "not a folder")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(cli("replay", str(task), str(empty)), "expected one *.tokens.json", "found 0")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.tokens.json").write_text("{not json")
    _one_line_error(cli("replay", str(task), str(bad)), "x.tokens.json", "not valid JSON")
    (bad / "x.tokens.json").write_text(json.dumps({"schema_version": 9, "arrays": {"codes": [[1]]}}))
    _one_line_error(cli("replay", str(task), str(bad)), "schema_version 9")
    (bad / "x.tokens.json").write_text(json.dumps({"schema_version": 1, "arrays": {"codes": [[1, 2], [3]]}}))
    _one_line_error(cli("replay", str(task), str(bad)), "arrays.codes", "equally long")
    (bad / "x.tokens.json").write_text(json.dumps({"schema_version": 1, "arrays": {"logits": [[1.5]]}}))
    _one_line_error(cli("replay", str(task), str(bad)), "arrays must name")
    (bad / "x.tokens.json").write_text(json.dumps({"schema_version": 1, "arrays": {"codes": [[1]]}, "margin": 9}))
    _one_line_error(cli("replay", str(task), str(bad)), "unknown field 'margin'")  # no candidate-sent margins
    _one_line_error(cli("replay", str(task), str(bad), "--margin", "-1"), "--margin")


@pytest.mark.slow
def test_exec_then_replay_accepts_and_an_edited_code_is_rejected(cli, tmp_path, tiny_musicgen):
    task = _task(tmp_path)
    out = tmp_path / "node"
    res = cli("exec", str(task), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert (out / "task.tokens.json").exists() and (out / "task.wav").exists()
    res = cli("replay", str(task), str(out))
    assert res.returncode == 0 and res.stdout.startswith("ACCEPTED"), res.stdout + res.stderr
    assert "start cold" in res.stdout  # harness exec runs a node's first task: seeded, then loaded
    doc = json.loads((out / "task.tokens.json").read_text())
    doc["arrays"]["codes"][6][1] = (doc["arrays"]["codes"][6][1] + 100) % 256
    (out / "task.tokens.json").write_text(json.dumps(doc))
    res = cli("replay", str(task), str(out), "--json")
    assert res.returncode == 1
    decision = json.loads(res.stdout)
    assert decision["accepted"] is False and decision["worst_flip"]["index"] == 6


@pytest.mark.slow
def test_unreplayable_tasks_are_never_accepted(cli, tmp_path, tiny_musicgen):
    task = _task(tmp_path, do_sample=False)
    folder = tmp_path / "greedy"
    folder.mkdir()
    (folder / "task.tokens.json").write_text(
        json.dumps({"schema_version": 1, "arrays": {"codes": [[1, 2, 3, 4]] * 13}})
    )
    res = cli("replay", str(task), str(folder))
    assert res.returncode == 1 and res.stdout.startswith("NOT REPLAYABLE") and "greedy" in res.stdout, res.stdout
    (folder / "task.tokens.json").write_text(
        json.dumps({"schema_version": 1, "device": "cuda:0", "arrays": {"codes": [[1, 2, 3, 4]] * 13}})
    )
    res = cli("replay", str(_task(tmp_path)), str(folder))
    assert res.returncode == 1 and res.stdout.startswith("NOT REPLAYABLE") and "CUDA" in res.stdout, res.stdout
