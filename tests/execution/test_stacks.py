"""Software stacks: a matrix's cells under other Python environments, compared with the current one.

No real stack is downloaded here (CI stays offline and fast): pip is asked with
``PIP_NO_INDEX=1``, so a requirement the current environment satisfies gives an empty overlay
and one that nothing satisfies gives pip's own error; the stack that changes outputs is a
planted overlay (transformers with one patched module, its version marked ``+planted``); the
harness-code mismatch is an overlay holding a copy of the harness with one changed byte.
"""

from __future__ import annotations

import json
import os
import shutil
from importlib import metadata
from pathlib import Path

import pytest

from harness.execution.env import code_digest, described_differences, library_changes
from harness.execution.stacks import build_pip, prepare, probed
from harness.spec.matrix import MatrixError, dump_matrix, expand, matrix_from_doc
from harness.spec.stacks import StackSpec

ROOT = Path(__file__).parent.parent.parent
GREEDY_GPT = {
    "model": "tiny:gpt2",
    "messages": [{"role": "user", "content": "hello world"}],
    "seed": 1,
    "generation_config": {"max_new_tokens": 6, "do_sample": False},
}
#: appended to the overlay's copy of transformers.generation.logits_process: every step's
#: scores shifted by one token id, so greedy decoding picks another token from the first step
PLANT = """

_planted_call = LogitsProcessorList.__call__


def _planted(self, input_ids, scores, **kwargs):
    return _planted_call(self, input_ids, scores, **kwargs).roll(1, dims=-1)


LogitsProcessorList.__call__ = _planted
"""


def _doc(stacks: dict, **over) -> dict:
    return {
        "schema_version": 1,
        "name": "stacks",
        "repeats": 1,
        "workers": 1,
        "timeout_s": 120,
        "tasks": [{"name": "gpt", "task": GREEDY_GPT}],
        "axes": {"threads": [1]},
        "stacks": stacks,
        "gates": {"verdict_dimensions": ["repeat", "stack"]},
        **over,
    }


# --- the matrix -------------------------------------------------------------------------------
def test_stack_axis_expands_after_current_with_stable_ids(tmp_path):
    m = matrix_from_doc(_doc({"t524": {"pip": ["transformers==5.24.0"]}}), tmp_path / "m.toml")
    cells = expand(m)
    assert [c.axes.stack for c in cells] == ["current", "t524"]
    current, other = cells
    assert current.cell_id == "gpt/auto/qnone/seed1/cpu/t1/b1/pon/warm/w0/r0"  # ids of earlier runs kept
    assert other.cell_id == "gpt/auto/qnone/seed1/cpu/t1/b1/pon/warm/stack-t524/w0/r0"
    assert other.config_id == current.config_id and other.spec_hash != current.spec_hash
    assert other.group_key != current.group_key  # never one worker for two stacks
    plain = matrix_from_doc({k: v for k, v in _doc({}).items() if k != "stacks"}, tmp_path / "m.toml")
    assert expand(plain)[0].spec_hash == current.spec_hash


@pytest.mark.parametrize("name", ["upgrade.toml", "upgrade-node-runner.toml"])
def test_the_shipped_upgrade_matrices_judge_the_previous_release(name):
    from harness.spec.matrix import load_matrix

    m = load_matrix(ROOT / "matrices" / name)
    assert m.spec.stacks["previous"].pip == ["transformers==5.24.0"]
    assert "stack" in m.spec.gates.verdict_dimensions
    cells = expand(m)
    assert {c.axes.stack for c in cells} == {"current", "previous"}
    assert len(cells) == (40 if name == "upgrade.toml" else 24)


@pytest.mark.parametrize(
    ("stacks", "over", "says"),
    [
        ({"current": {"pip": ["numpy"]}}, {}, "$.stacks: Value error, 'current' is the interpreter"),
        ({"x": {"pip": ["numpy ==="]}}, {}, "$.stacks.x.pip: Value error, 'numpy ===' is not a pip requirement"),
        ({"x": {"pip": ["consensus-harness==0.1"]}}, {}, "cannot replace the harness itself"),
        ({"x": {}}, {}, "$.stacks.x: Value error, give exactly one of pip, python or overlay"),
        ({"x": {"pip": ["numpy"], "python": "/usr/bin/python3"}}, {}, "give exactly one of"),
        ({"x": {"pip": ["numpy"]}}, {"axes": {"stack": ["y"]}}, "$.axes.stack: unknown stack 'y'"),
        ({"x": {"pip": ["numpy"]}}, {"exclude": [{"stack": "z"}]}, "$.exclude[0].stack: unknown stack 'z'"),
    ],
)
def test_bad_stacks_are_one_line_naming_the_field(tmp_path, stacks, over, says):
    with pytest.raises(MatrixError) as err:
        matrix_from_doc(_doc(stacks, **over), tmp_path / "m.toml")
    assert says in str(err.value) and len(str(err.value).splitlines()) == 1, str(err.value)


# --- building ---------------------------------------------------------------------------------
def test_a_satisfied_requirement_is_the_current_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    stack = build_pip("same", [f"numpy=={metadata.version('numpy')}"], home=tmp_path)
    assert stack.problem is None and stack.path == () and stack.packages == {}
    again = build_pip("same", [f"numpy=={metadata.version('numpy')}"], home=tmp_path)
    assert again.key == stack.key  # remembered: no second question to pip
    assert list((tmp_path / "requests").iterdir())


def test_a_stack_pip_cannot_build_says_pips_reason_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    stack = build_pip("broken", ["no-such-package-zz==1.0"], home=tmp_path)
    assert stack.problem is not None and "\n" not in stack.problem
    assert stack.problem.startswith("stack broken: ERROR: ") and "no-such-package-zz" in stack.problem
    assert not [p for p in tmp_path.iterdir() if p.name != "requests"]  # nothing half-built left behind


def test_an_overlay_with_another_harness_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # python -c and -m import from the working folder first, as workers do
    stack = probed(prepare("foreign", StackSpec(overlay=str(_foreign_harness(tmp_path))), tmp_path), code_digest())
    assert stack.problem is None
    assert stack.refusal and "stack foreign runs another harness build" in stack.refusal
    assert code_digest()[:12] in stack.refusal


def test_a_missing_interpreter_or_folder_is_a_problem_not_a_crash(tmp_path):
    gone = prepare("gone", StackSpec(python="venv/bin/python"), tmp_path)
    assert gone.problem == f"stack gone: no interpreter at {tmp_path / 'venv/bin/python'}"
    assert "is not a folder" in (prepare("nowhere", StackSpec(overlay="nope"), tmp_path).problem or "")


def test_library_changes_name_each_version():
    a = {"python": "3.11.7", "transformers": "5.25.0", "tokenizers": "0.23.3"}
    b = {"python": "3.11.7", "transformers": "5.24.0", "tokenizers": None}
    assert library_changes(a, b) == ["tokenizers 0.23.3 -> absent", "transformers 5.25.0 -> 5.24.0"]
    assert library_changes(a, a) == [] and library_changes(None, b) == []


def test_compare_and_certify_name_the_versions_that_differ():
    a = {"torch": "2.13.0+cpu", "libraries": {"transformers": "5.25.0"}, "cpu_flags": ["avx2"], "hostname_hash": "x"}
    b = {"torch": "2.13.0+cpu", "libraries": {"transformers": "5.24.0"}, "cpu_flags": ["avx2", "avx512f"]}
    assert described_differences(a, b) == ["cpu_flags", "libraries.transformers 5.25.0 -> 5.24.0"]


# --- end to end -------------------------------------------------------------------------------
def _planted_transformers(root: Path) -> Path:
    """An overlay: transformers as installed, but for one patched module and its version."""
    import transformers

    real = Path(transformers.__file__).parent
    overlay = root / "planted"
    pkg = overlay / "transformers"
    pkg.mkdir(parents=True)
    for entry in real.iterdir():
        if entry.name not in ("generation", "__pycache__"):
            (pkg / entry.name).symlink_to(entry)
    (pkg / "generation").mkdir()
    for entry in (real / "generation").iterdir():
        if entry.name not in ("logits_process.py", "__pycache__"):
            (pkg / "generation" / entry.name).symlink_to(entry)
    source = (real / "generation" / "logits_process.py").read_text()
    (pkg / "generation" / "logits_process.py").write_text(source + PLANT)
    dist = metadata.distribution("transformers")
    info = overlay / f"transformers-{dist.version}+planted.dist-info"
    info.mkdir()
    text = dist.read_text("METADATA") or ""
    (info / "METADATA").write_text(text.replace(f"Version: {dist.version}\n", f"Version: {dist.version}+planted\n", 1))
    return overlay


def _foreign_harness(root: Path) -> Path:
    """An overlay holding a copy of the harness with one changed byte: another build."""
    overlay = root / "foreign"
    shutil.copytree(ROOT / "harness", overlay / "harness", ignore=shutil.ignore_patterns("__pycache__"))
    with open(overlay / "harness" / "__init__.py", "a") as fh:
        fh.write("#\n")
    return overlay


def test_stacks_end_to_end_bitwise_planted_unbuildable_and_refused(tmp_path, tiny_gpt2, cli):
    same = f"numpy=={metadata.version('numpy')}"
    stacks = {
        "same": {"pip": [same]},
        "planted": {"overlay": str(_planted_transformers(tmp_path))},
        "broken": {"pip": ["no-such-package-zz==1.0"]},
        "foreign": {"overlay": str(_foreign_harness(tmp_path))},
    }
    # the refused stack runs another task, so it is another configuration: its failed verdict
    # does not hide the planted stack's divergence
    tasks = [
        {"name": "gpt", "task": GREEDY_GPT, "axes": {"stack": ["current", "same", "planted", "broken"]}},
        {"name": "hi", "task": {**GREEDY_GPT, "seed": 2}, "axes": {"stack": ["current", "foreign"]}},
    ]
    matrix = tmp_path / "stacks.toml"
    matrix.write_text(dump_matrix(_doc(stacks, tasks=tasks)))
    env = {"PIP_NO_INDEX": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # from another folder: a worker imports from its working folder first (python -m), before any overlay
    run = cli("run", str(matrix), "--out", str(tmp_path / "run"), "--no-progress", env=env, cwd=tmp_path)
    assert run.returncode == 1, run.stdout + run.stderr  # the judged stack dimension diverges: the gate fails
    version = metadata.version("transformers")
    changed = f"transformers {version} -> {version}+planted"
    assert "GATE FAILED gpt/auto/qnone/cpu/pon: not_ready" in run.stderr
    assert "divergent across stack; first divergent step 0; what differed: " + changed in run.stderr
    assert "GATE FAILED hi/auto/qnone/cpu/pon: failed" in run.stderr
    records = {
        r["axes"]["stack"]: r for r in map(json.loads, (tmp_path / "run" / "results.jsonl").read_text().splitlines())
    }
    assert records["current"]["status"] == records["same"]["status"] == records["planted"]["status"] == "ok"
    assert records["same"]["digests"] == records["current"]["digests"]  # a stack that changes nothing: bitwise
    assert records["planted"]["digests"]["tokens"] != records["current"]["digests"]["tokens"]
    assert records["planted"]["libraries"]["transformers"] == f"{version}+planted"
    assert records["current"]["libraries"]["transformers"] == version
    broken = records["broken"]
    assert broken["status"] == "skipped" and broken["reason"].startswith("stack broken: ERROR: ")
    assert "\n" not in broken["reason"] and "Traceback" not in run.stderr
    foreign = records["foreign"]
    assert foreign["status"] == "failed" and foreign["reason"].startswith("not run: stack foreign runs another harness")
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    config = next(c for c in report["configs"] if c["task"] == "gpt")
    stack = config["dimensions"]["stack"]
    assert stack["levels"] == {"bitwise": 1, "divergent": 1} and stack["first_divergence"] == [0]
    assert stack["changed"] == [changed]
    upgrade = next(f for f in report["summary"]["findings"] if f["kind"] == "stack-upgrade")
    assert f"({changed}): bytes kept in 0 configuration(s); only tokens kept in 0" in upgrade["text"]
    assert "outputs changed in 1 configuration(s): gpt/auto/qnone/cpu/pon." in upgrade["text"]
    assert report["evidence"]["receipts_checked"] == 4  # each stack's receipts hold with its own libraries
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stacks"]["planted"]["libraries"]["transformers"] == f"{version}+planted"
    assert manifest["environment"]["libraries"]["transformers"] == version  # the run's own: current's
    # the versions a record names are evidence: edited, the gate fails naming the record
    results = tmp_path / "run" / "results.jsonl"
    lines = results.read_text().splitlines()
    for i, line in enumerate(lines):
        record = json.loads(line)
        if record["axes"]["stack"] in ("current", "planted") and record["status"] == "ok":
            record["libraries"]["transformers"] = "5.24.0"
            lines[i] = json.dumps(record)
    results.write_text("\n".join(lines) + "\n")
    gated = cli("report", str(tmp_path / "run"), "--gate", env=env, cwd=tmp_path)
    assert gated.returncode == 1
    out = gated.stdout + gated.stderr
    assert "stack-planted/w0/r0: receipt link 'libraries' does not hold" in out
    assert "its libraries are not the run environment's" in out
