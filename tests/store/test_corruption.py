"""Corrupted run directories: a torn last line, a flipped byte in an artifact, a manifest from
a newer harness, a manifest that is not JSON. Reports keep working and say what is wrong;
refusals are one clear error; ``--resume`` repairs and completes without loss or duplicates.

Two real runs on the tiny GPT-2 are made once for the module and copied for each test.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from harness.cli.main import main
from tests.execution.test_matrix_runner import ROOT, mini_matrix
from tests.spec.test_hostile_inputs import assert_one_error_block

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bitwise_run(tmp_path_factory, tiny_gpt2):
    """4 cells, all ok, bitwise across repeats (the real engine)."""
    from conftest import run_cli

    base = tmp_path_factory.mktemp("bitwise")
    matrix = mini_matrix(base, workers=1, repeats=2, axes={"seed": [1, 2], "threads": [1]})
    res = run_cli("run", str(matrix), "--out", str(base / "run"), "--no-progress", "--formats", "json")
    assert res.returncode == 0, res.stderr
    return matrix, base / "run"


@pytest.fixture(scope="module")
def divergent_run(tmp_path_factory, tiny_gpt2):
    """2 repeats whose outputs differ (a planted non-deterministic engine), so the report has
    to open their artifacts to compare them."""
    import os

    from conftest import run_cli

    base = tmp_path_factory.mktemp("divergent")
    matrix = mini_matrix(base, workers=1, repeats=2, axes={"seed": [1], "threads": [1]})
    env = {
        "HARNESS_ENGINES": "gpt=tests.doubles:NonDeterministicTextEngine",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    res = run_cli("run", str(matrix), "--out", str(base / "run"), "--no-progress", "--formats", "json", env=env)
    assert res.returncode == 1, res.stderr  # not_ready: the repeats diverge
    return matrix, base / "run"


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / run.name
    shutil.copytree(run, target, ignore=shutil.ignore_patterns(".lock", "report.*"))
    return target


def _report(capsys, run_dir: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["report", str(run_dir), "--formats", "json,md", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_torn_last_line_report_names_it_and_resume_appends_cleanly(cli, capsys, tmp_path, bitwise_run):
    matrix, original = bitwise_run
    run_dir = _copy(original, tmp_path)
    results = run_dir / "results.jsonl"
    data = results.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    torn_cell = json.loads(data[last_start:])["cell_id"]
    results.write_bytes(data[: last_start + (len(data) - last_start) // 2])  # a crash in the middle of the last write

    code, _out, err = _report(capsys, run_dir)
    assert code == 0 and "Traceback" not in err, err
    assert "results.jsonl:4: torn last line (a crash mid-write?) skipped" in err
    report = json.loads((run_dir / "report.json").read_text())
    assert any("results.jsonl:4: torn last line" in p for p in report["problems"])
    assert "torn last line" in (run_dir / "report.md").read_text()
    assert results.read_bytes() == data[: last_start + (len(data) - last_start) // 2]  # a reader changes nothing

    res = cli("run", str(matrix), "--out", str(run_dir), "--no-progress", "--resume", "--formats", "json")
    assert res.returncode == 0, res.stderr
    assert "torn last line" in res.stderr and "results.torn.jsonl" in res.stderr
    assert "1 executed, 3 already done" in res.stdout
    lines = results.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole
    ok = Counter(r["cell_id"] for r in records if r["status"] == "ok")
    assert len(ok) == 4 and set(ok.values()) == {1} and records[-1]["cell_id"] == torn_cell
    assert (run_dir / "results.torn.jsonl").read_bytes().endswith(b"\n")
    code, _, err = _report(capsys, run_dir)
    assert code == 0 and "note:" not in err  # repaired: nothing left to report


def test_garbage_line_in_the_middle_is_reported_and_the_rest_loads(capsys, tmp_path, bitwise_run):
    _, original = bitwise_run
    run_dir = _copy(original, tmp_path)
    lines = (run_dir / "results.jsonl").read_bytes().splitlines(keepends=True)
    lines.insert(2, b"\x00\xff{not json at all\n")
    (run_dir / "results.jsonl").write_bytes(b"".join(lines))
    code, _, err = _report(capsys, run_dir)
    assert code == 0 and "Traceback" not in err
    assert "results.jsonl:3: unreadable record skipped" in err
    assert json.loads((run_dir / "report.json").read_text())["configs"][0]["verdict"] == "ready"


def test_flipped_byte_in_an_artifact_is_named_by_the_report(capsys, tmp_path, divergent_run):
    _, original = divergent_run
    run_dir = _copy(original, tmp_path)
    record = json.loads((run_dir / "results.jsonl").read_text().splitlines()[1])
    artifact = run_dir / record["artifact"]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 3] ^= 0x01
    artifact.write_bytes(bytes(data))

    code, _, err = _report(capsys, run_dir, "--gate")
    assert "Traceback" not in err, err
    assert code == 1  # the damaged configuration is not judged ready: the gate fails, by name
    problems = json.loads((run_dir / "report.json").read_text())["problems"]
    named = [p for p in problems if artifact.name in p]
    assert named and any(word in named[0] for word in ("corrupted artifact", "unreadable")), problems
    assert artifact.name in err and "note:" in err
    config = json.loads((run_dir / "report.json").read_text())["configs"][0]
    assert config["verdict"] == "failed" and any("artifact unreadable" in f for f in config["failures"])


def test_flipped_byte_in_an_agreeing_artifact_is_found_by_verification(capsys, tmp_path, bitwise_run):
    """Outputs that agree are compared by digest alone; `harness report` still re-hashes every
    artifact (unless --no-verify) so silent damage to kept data is named."""
    _, original = bitwise_run
    run_dir = _copy(original, tmp_path)
    record = json.loads((run_dir / "results.jsonl").read_text().splitlines()[0])
    artifact = run_dir / record["artifact"]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0x01
    artifact.write_bytes(bytes(data))
    code, _, err = _report(capsys, run_dir)
    assert code == 0 and "Traceback" not in err
    assert f"note: {record['cell_id']}:" in err and artifact.name in err
    code, _, err = _report(capsys, run_dir, "--no-verify")
    assert artifact.name not in err  # without verification the agreeing pair never reads it


@pytest.mark.parametrize(
    "damage,expect",
    [
        (
            lambda m: json.dumps({**m, "schema_version": 99}),
            "schema_version 99 is newer than this harness supports (1)",
        ),
        (lambda m: json.dumps(m)[:-7], "manifest is not valid JSON"),
        (lambda m: "\x00\xff\xfe garbage", "manifest is not valid JSON"),
        (lambda m: json.dumps([m]), "manifest must be a JSON object"),
        (lambda m: json.dumps({**m, "schema_version": "1"}), "schema_version is missing or not a positive integer"),
    ],
)
def test_bad_manifest_is_one_clear_error(cli, capsys, tmp_path, bitwise_run, damage, expect):
    matrix, original = bitwise_run
    run_dir = _copy(original, tmp_path)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    (run_dir / "manifest.json").write_bytes(damage(manifest).encode("utf-8", "surrogateescape"))
    before = (run_dir / "results.jsonl").read_bytes()
    code, _, err = _report(capsys, run_dir)
    assert_one_error_block(code, err, "manifest.json", expect)
    code = main(["run", str(matrix), "--out", str(run_dir), "--resume", "--no-progress"])
    _, err = capsys.readouterr()
    assert_one_error_block(code, err, "manifest.json", expect)
    assert (run_dir / "results.jsonl").read_bytes() == before  # nothing written, nothing lost


def test_missing_manifest_and_newer_record_are_one_clear_error(capsys, tmp_path, bitwise_run):
    _, original = bitwise_run
    run_dir = _copy(original, tmp_path)
    (run_dir / "manifest.json").unlink()
    code, _, err = _report(capsys, run_dir)
    assert_one_error_block(code, err, "manifest not found")
    run_dir = _copy(original, tmp_path / "second")
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    lines[1] = json.dumps({**json.loads(lines[1]), "schema_version": 5})
    (run_dir / "results.jsonl").write_text("\n".join(lines) + "\n")
    code, _, err = _report(capsys, run_dir)
    assert_one_error_block(code, err, "results.jsonl:2: schema_version 5 is newer")
