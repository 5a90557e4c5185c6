"""The pytest plugin (harness.cli.pytest_plugin, entry point ``pytest11``): the README's
three-line gate exactly as printed, assert_reproducible failing in the report's words,
``--harness-matrix`` as a session with -k, -x, --junitxml and pytest-xdist, the
``harness_matrix`` marker, and a plugin that costs nothing when unused.

Every run is on tiny GPT-2 with a few tokens, in pytest subprocesses (a real user's session;
the harness workers they start are fresh processes either way)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
TASK = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "hello world"}],
    "seed": 1,
    "generation_config": {"max_new_tokens": 4, "do_sample": True, "top_k": 20, "top_p": 1.0},
}
MATRIX = """schema_version = 1
name = "mini"
repeats = 2
workers = 1
timeout_s = 120

[[tasks]]
name = "gpt"
file = "tasks/my-task.json"

[axes]
dtype = ["float32", "bfloat16"]
threads = [1]
"""
PLANTED = "gpt=tests.doubles:NonDeterministicTextEngine"  # a text engine that samples unseeded


def plugin_args() -> list[str]:
    """``-p harness.cli.pytest_plugin`` unless the installed package's entry point loads it
    already (pytest refuses a plugin registered twice)."""
    from importlib.metadata import entry_points

    installed = any(ep.value.split(":")[0] == "harness.cli.pytest_plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "harness.cli.pytest_plugin"]


@pytest.fixture
def repo(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tiny_gpt2) -> pytest.Pytester:
    """A model repository: a task file and a small matrix, the harness importable."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.delenv("HARNESS_ENGINES", raising=False)
    (pytester.path / "tasks").mkdir()
    (pytester.path / "tasks" / "my-task.json").write_text(json.dumps(TASK))
    (pytester.path / "mini.toml").write_text(MATRIX)
    return pytester


#: the pages that print the three-line gate: the README and the model developers' docs page
GATE_PAGES = ("README.md", "docs/usage/developers.md")


def readme_gate() -> str:
    """The code block marked ``<!-- three-line gate -->``, as printed: the same on every page that
    prints it (the README and the model developers' page), so the test runs what both say."""
    blocks = []
    for page in GATE_PAGES:
        found = re.search(r"<!-- three-line gate -->\n```python\n(.*?)```", (ROOT / page).read_text(), re.S)
        assert found, f"{page}: the three-line gate block is missing"
        blocks.append(found.group(1))
    assert len(set(blocks)) == 1, f"the three-line gate differs between {' and '.join(GATE_PAGES)}"
    return blocks[0]


def run(repo: pytest.Pytester, *args: str, timeout: float = 600) -> pytest.RunResult:
    return repo.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider", *args, timeout=timeout)


@pytest.mark.slow
def test_the_readme_three_line_gate_as_printed(repo):
    code = readme_gate()
    assert len([line for line in code.splitlines() if line.strip()]) == 3, code
    repo.makepyfile(test_gate=code)
    res = run(repo, "-q")
    res.assert_outcomes(passed=1)


@pytest.mark.slow
def test_assert_reproducible_fails_in_the_reports_words(repo, monkeypatch):
    monkeypatch.setenv("HARNESS_ENGINES", PLANTED)
    repo.makepyfile(
        test_gate=f"""
        TASK = {TASK!r}

        def test_planted(assert_reproducible):
            assert_reproducible(TASK, across=["repeat"])

        def test_unknown_dimension(assert_reproducible):
            assert_reproducible(TASK, across=["node"])
    """
    )
    res = run(repo, "-q")
    res.assert_outcomes(failed=2)
    out = res.stdout.str()
    # the verdict, the level, the first divergent step, what differed and the cells
    assert "AssertionError: task/auto/qnone/cpu/pon: not_ready: divergent across repeat; first divergent step" in out
    assert "repeat: divergent (outputs diverge) when the same worker process runs it again" in out
    assert "what differed: the discrete outputs (codes / token ids) from step" in out
    assert re.search(r"cells: task/auto/qnone/seed1/cpu/t1/b1/pon/warm/w0/r0 vs \S+/w0/r1", out)
    assert "report: " in out and "report.md" in out
    assert "across: unknown dimension 'node' (a fleet dimension" in out


@pytest.mark.slow
def test_harness_matrix_session_with_k_and_junitxml(repo):
    from junitparser import JUnitXml

    out = repo.path / "runs"
    res = run(
        repo, "--harness-matrix", "mini.toml", "-k", "float32", "--junitxml", "j.xml", "--harness-out", str(out), "-v"
    )
    res.assert_outcomes(passed=1, deselected=1)
    res.stdout.fnmatch_lines(["*mini.toml::gpt/float32/qnone/cpu/pon PASSED*"])
    suite = next(iter(JUnitXml.fromfile(str(repo.path / "j.xml"))))
    assert [(c.classname, c.name) for c in suite] == [("mini.toml", "gpt/float32/qnone/cpu/pon")]
    # only the selected configuration's cells ran
    (run_dir,) = [p.parent for p in out.rglob("results.jsonl")]
    configs = {json.loads(line)["config_id"] for line in (run_dir / "results.jsonl").read_text().splitlines()}
    assert configs == {"gpt/float32/qnone/cpu/pon"}


@pytest.mark.slow
def test_harness_matrix_session_stops_at_the_first_failure_with_x(repo, monkeypatch):
    monkeypatch.setenv("HARNESS_ENGINES", PLANTED)
    res = run(repo, "--harness-matrix", "mini.toml", "-x")
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "stopping after 1 failures" in out
    assert "gpt/bfloat16/qnone/cpu/pon: not_ready: divergent across repeat" in out
    assert "Traceback" not in out  # the report's words, not the plugin's stack


@pytest.mark.slow
def test_harness_matrix_session_under_xdist(repo):
    out = repo.path / "runs"
    res = run(repo, "--harness-matrix", "mini.toml", "-n", "2", "--harness-out", str(out))
    res.assert_outcomes(passed=2)
    runs = sorted(p.parent for p in out.rglob("results.jsonl"))
    assert len(runs) == 2  # each xdist worker ran the configuration it was given
    for run_dir in runs:
        lines = (run_dir / "results.jsonl").read_text().splitlines()
        assert len({json.loads(line)["config_id"] for line in lines}) == 1


@pytest.mark.slow
def test_harness_matrix_marker_runs_the_matrix_once(repo):
    repo.makepyfile(
        test_matrix="""
        import pytest

        @pytest.mark.harness_matrix("mini.toml")
        def test_gate(harness_matrix):
            harness_matrix.assert_passed()
            assert {c.verdict for c in harness_matrix.analysis.configs} == {"ready"}

        @pytest.mark.harness_matrix("mini.toml")
        def test_same_run(harness_matrix):
            assert harness_matrix.report.is_file()
            assert len(list(harness_matrix.run_dir.parent.parent.glob("mini[0-9]*"))) == 1  # one run

        def test_no_marker(harness_matrix):
            pass
    """
    )
    res = run(repo, "-q")
    res.assert_outcomes(passed=2, errors=1)  # the fixture refuses at set-up
    assert "needs @pytest.mark.harness_matrix(PATH)" in res.stdout.str()


def test_the_plugin_costs_nothing_when_unused(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
    """Loaded but unused: its options exist, nothing of the harness beyond the plugin module is
    imported (no torch, no pydantic), and a test suite runs as it did."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    pytester.makepyfile(
        test_plain="""
        import sys

        def test_plain():
            loaded = sorted(m for m in sys.modules if m.startswith("harness") or m in ("torch", "pydantic"))
            assert loaded == ["harness", "harness.cli", "harness.cli.pytest_plugin"], loaded
    """
    )
    res = pytester.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider", "-q")
    res.assert_outcomes(passed=1)
    help_text = pytester.runpytest_subprocess(*plugin_args(), "--help").stdout.str()
    assert "--harness-matrix=MATRIX" in help_text and "--harness-out=DIR" in help_text
    probe = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import pytest, harness.cli.pytest_plugin"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert probe.returncode == 0, probe.stderr
    line = next(x for x in probe.stderr.splitlines() if x.rstrip().endswith("| harness.cli.pytest_plugin"))
    cumulative_us = int(line.split("|")[1])
    assert cumulative_us < 500_000, line  # measured about 12-50 ms on a loaded 2-core machine


def test_assert_reproducible_refuses_bad_dimensions_before_running():
    from harness.cli.pytest_plugin import reproducibility_matrix

    with pytest.raises(ValueError, match="unknown dimension 'speed'"):
        reproducibility_matrix(TASK, ["speed"])
    with pytest.raises(ValueError, match="name at least one"):
        reproducibility_matrix(TASK, [])
    doc = reproducibility_matrix(TASK, ["threads", "repeat"])
    assert doc["gates"] == {"fail_on": ["not_ready", "failed"], "verdict_dimensions": ["threads", "repeat"]}
    assert (doc["repeats"], doc["workers"], doc["axes"]["threads"]) == (2, 1, [1, 2])
    from harness.spec.matrix import expand, matrix_from_doc

    cells = expand(matrix_from_doc(doc))
    assert len(cells) == 4 and {c.axes.threads for c in cells} == {1, 2}


def test_assert_reproducible_arguments_are_checked_naming_the_argument():
    """Issue 29 item 11: one string is one name, never its characters; other types refused."""
    from harness.cli.pytest_plugin import reproducibility_matrix

    doc = reproducibility_matrix(TASK, "repeat", seeds=42, dtypes="float32")
    assert doc["gates"]["verdict_dimensions"] == ["repeat"] and doc["repeats"] == 2
    assert doc["axes"]["seed"] == [42] and doc["axes"]["dtype"] == ["float32"]
    for kwargs, error, needle in (
        ({"across": None}, TypeError, "across: expected a name or a list of names, got NoneType"),
        ({"across": 3}, TypeError, "across: expected a name or a list of names, got int"),
        ({"across": ["repeat", 1]}, TypeError, "across:"),
        ({"across": "r"}, ValueError, "unknown dimension 'r'"),
        ({"seeds": "42"}, TypeError, "seeds: expected an integer or a list of integers, got str '42'"),
        ({"seeds": [True]}, TypeError, "seeds:"),
        ({"dtypes": 32}, TypeError, "dtypes:"),
        ({"validators": ["composite"]}, TypeError, "validators: expected a table"),
        ({"timeout_s": "300"}, ValueError, "timeout_s"),
    ):
        with pytest.raises(error, match=None) as info:
            reproducibility_matrix(TASK, **{"across": ["repeat"], **kwargs})
        assert needle in str(info.value), str(info.value)
    with pytest.raises(TypeError, match="task:"):
        reproducibility_matrix(None, ["repeat"])  # type: ignore[arg-type]


def test_a_matrix_over_the_cell_limit_tells_the_plugin_user_what_to_do(tmp_path):
    from harness.cli.pytest_plugin import reproducibility_matrix, run_matrix_doc
    from harness.spec.matrix import MatrixError

    doc = reproducibility_matrix(TASK, ["repeat"], seeds=list(range(20_001)))
    with pytest.raises(MatrixError) as info:
        run_matrix_doc(doc, tmp_path / "run")
    msg = str(info.value)
    assert "harness run MATRIX --max-cells N" in msg and "pass --max-cells" not in msg, msg
