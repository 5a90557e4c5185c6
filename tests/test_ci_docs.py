"""docs/ci: the GitHub Actions workflow and the GitLab CI job others copy, checked by the
tools' own schemas (check-jsonschema's vendored SchemaStore schemas for GitHub workflows and
GitLab CI; actionlint too when it is installed), not by eye, and checked to do what the docs
(docs/ci.md) say: run ``nox -s determinism`` with a JUnit file on the tiny models, upload report.html and
that file, cache the tiny models and pip's wheels."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
GITHUB = ROOT / "docs" / "ci" / "github-determinism.yml"
GITLAB = ROOT / "docs" / "ci" / "gitlab-ci.yml"
SCHEMAS = {GITHUB: "vendor.github-workflows", GITLAB: "vendor.gitlab-ci"}


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("check_jsonschema") is None:
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("path", list(SCHEMAS), ids=lambda p: p.name)
def test_the_ci_files_validate_against_their_tools_schemas(path: Path, tmp_path: Path) -> None:
    res = check_jsonschema(SCHEMAS[path], path)
    assert res.returncode == 0, res.stdout + res.stderr
    # the check is not a rubber stamp: a misspelt key fails it
    broken = tmp_path / path.name
    text = path.read_text()
    broken.write_text(text.replace("runs-on:", "runs_on:") if path == GITHUB else text.replace("script:", "scripts:"))
    res = check_jsonschema(SCHEMAS[path], broken)
    assert res.returncode != 0, res.stdout


def test_actionlint_when_installed() -> None:
    tool = shutil.which("actionlint")
    if tool is None:
        pytest.skip("actionlint is not installed (the schema check above runs without it)")
    res = subprocess.run([tool, "-shellcheck=", "-pyflakes=", str(GITHUB)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def _nox_commands(lines: list[str]) -> list[list[str]]:
    return [
        shlex.split(line.strip())
        for block in lines
        for line in block.splitlines()
        if line.strip().startswith("nox -s determinism")
    ]


def _determinism_args(words: list[str], env: dict[str, str]) -> tuple[str, list[str]]:
    sys.path.insert(0, str(ROOT))
    try:
        from noxfile import determinism_args
    finally:
        sys.path.remove(str(ROOT))
    posargs = words[words.index("--") + 1 :]
    return determinism_args(
        [env.get(w[2:-1], w) if w.startswith("${") else env.get(w[1:], w) if w.startswith("$") else w for w in posargs]
    )


def test_github_workflow_runs_the_gate_uploads_and_caches() -> None:
    doc = yaml.safe_load(GITHUB.read_text())
    job = doc["jobs"]["determinism"]
    env = job["env"]
    steps = job["steps"]
    commands = _nox_commands([s["run"] for s in steps if "run" in s])
    assert len(commands) == 1
    run_dir, args = _determinism_args(commands[0], env)
    junit = args[args.index("--junit") + 1]
    assert (run_dir, junit) == (env["RUN_DIR"], env["JUNIT"]) and args[0] == "matrices/smoke.toml"
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@"))
    uploaded = upload["with"]["path"].split()
    assert f"{run_dir}/report.html" in uploaded and junit in uploaded and upload["if"] == "always()"
    cached = {s["with"]["path"] for s in steps if s.get("uses", "").startswith("actions/cache@")}
    assert cached == {".cache/consensus-harness", ".cache/pip"}
    assert env["CONSENSUS_HARNESS_HOME"].endswith("/.cache/consensus-harness")
    assert env["PIP_CACHE_DIR"].endswith("/.cache/pip")


def test_gitlab_job_runs_the_gate_keeps_the_report_and_caches() -> None:
    doc = yaml.safe_load(GITLAB.read_text())
    job = doc["determinism"]
    env = job["variables"]
    commands = _nox_commands(job["script"])
    assert len(commands) == 1
    run_dir, args = _determinism_args(commands[0], env)
    junit = args[args.index("--junit") + 1]
    assert (run_dir, junit) == (env["RUN_DIR"], env["JUNIT"])
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always" and artifacts["reports"]["junit"] == junit
    assert f"{run_dir}/report.html" in artifacts["paths"] and junit in artifacts["paths"]
    cached = {p for c in job["cache"] for p in c["paths"]}
    assert cached == {".cache/consensus-harness", ".cache/pip"}
    assert env["CONSENSUS_HARNESS_HOME"] == "$CI_PROJECT_DIR/.cache/consensus-harness"
    assert env["PIP_CACHE_DIR"] == "$CI_PROJECT_DIR/.cache/pip"


def test_nox_determinism_takes_a_junit_file() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from noxfile import determinism_args
    finally:
        sys.path.remove(str(ROOT))
    assert determinism_args([]) == (
        "reports/runs/determinism-smoke",
        ["matrices/smoke.toml", "--out", "reports/runs/determinism-smoke", "--no-progress"],
    )
    out, args = determinism_args(["runs/x", "--junit", "j.xml"])
    assert out == "runs/x" and args[-2:] == ["--junit", "j.xml"]
    assert determinism_args(["--junit=j.xml"])[1][-2:] == ["--junit", "j.xml"]
    with pytest.raises(ValueError, match="unknown argument '--junk'"):
        determinism_args(["--junk"])


def test_nox_tests_run_one_xdist_worker_per_core_up_to_four() -> None:
    sys.path.insert(0, str(ROOT))
    try:
        from noxfile import parallel_args
    finally:
        sys.path.remove(str(ROOT))
    assert parallel_args(None) == [] and parallel_args(1) == []
    assert parallel_args(2) == ["-n", "2", "--dist", "loadfile"]
    assert parallel_args(16)[:2] == ["-n", "4"]
