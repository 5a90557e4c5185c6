"""Hostile task and matrix files through the real CLI entry points.

Every document here is junk a network or a careless operator could hand the harness: wrong
types, huge numbers, negative seeds, NaN/Infinity literals, RTL and zero-width characters,
lone surrogates, 10,000 levels of nesting, 10 MB prompts, unknown fields, binary garbage,
empty files, directories, missing files. Each must give exactly one error block (first line
``error:`` or ``INVALID``, the field's JSON path where there is one), exit code 2, never a
traceback and never a hang. Most cases call ``harness.cli.main.main`` in-process (fast); a few
run ``python -m harness.cli`` as a user would. ``FUZZED`` counts the inputs; the total is
printed at the end of the module (``pytest -s`` or the terminal summary shows it).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import print_through_capture
from harness.cli.main import main
from harness.spec.tasks import MAX_PROMPT_CHARS, MAX_TASK_FILE_BYTES
from tests.execution.test_matrix_runner import GPT_TASK, _toml

ROOT = Path(__file__).parent.parent.parent
FUZZED: Counter = Counter()  # inputs fed to the CLI, by family
OBSERVED: Counter = Counter()  # hangs (over the time bound) and tracebacks seen, counted before asserting
CALL_LIMIT_S = 5.0  # "never a hang": one in-process CLI call on one input

AUDIO_BASE = {
    "model": "tiny:musicgen",
    "prompt": "80s pop",
    "seed": 42,
    "dtype": "auto",
    "quantize_bits": None,
    "generation_config": {
        "max_new_tokens": 8,
        "do_sample": True,
        "top_k": 50,
        "top_p": 1.0,
        "temperature": 1.0,
        "guidance_scale": 3.0,
    },
}
GPT_BASE = {**GPT_TASK, "dtype": "auto", "quantize_bits": None}


@pytest.fixture(scope="module", autouse=True)
def _report_count(request, tiny_gpt2, tiny_musicgen):
    # torch imported and the tiny models built once up front, so no CLI call pays for them inside
    # its time bound (a run's manifest records the tiny weights' digests: the first call built them)
    import torch  # noqa: F401

    yield
    total = sum(FUZZED.values())
    line = (
        f"hostile inputs fuzzed through the CLI: {total} ({', '.join(f'{k} {v}' for k, v in sorted(FUZZED.items()))}); "
        f"tracebacks {OBSERVED['traceback']}, hangs {OBSERVED['hang']}"
    )
    print_through_capture(request, line)


def _cli(capsys, family: str, *args: str) -> tuple[int, str, str]:
    """``harness ARGS`` in this process, time-bounded, environment restored afterwards."""
    FUZZED[family] += 1
    saved = dict(os.environ)
    start = time.monotonic()
    try:
        code = main(list(args))
    finally:
        took = time.monotonic() - start
        os.environ.clear()
        os.environ.update(saved)
    out, err = capsys.readouterr()
    OBSERVED["hang"] += took >= CALL_LIMIT_S
    OBSERVED["traceback"] += "Traceback" in err
    assert took < CALL_LIMIT_S, f"harness {' '.join(args)[:200]} took {took:.1f} s"
    return code, out, err


def assert_one_error_block(code: int, err: str, *expect: str) -> None:
    """Exit 2, no traceback, one block: a first line ``error:``/``INVALID``, indented detail."""
    assert code == 2, err[:2000]
    assert "Traceback" not in err, err[:2000]
    lines = err.rstrip("\n").splitlines()
    assert lines, "no error message"
    assert lines[0].startswith(("error:", "INVALID")), err[:2000]
    heads = [line for line in lines if not line.startswith(" ")]
    assert heads == [lines[0]], f"more than one error block:\n{err[:2000]}"
    for text in expect:
        assert text in err, f"{text!r} not in:\n{err[:2000]}"


# --- hostile values ------------------------------------------------------------------------
SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udc80b", "\ud83d"])  # lone halves: "\ud800" in JSON
ODD_TEXT = st.one_of(
    st.text(min_size=1, max_size=30),
    st.sampled_from(
        [
            "\u202e\u202dRTL\u200f",
            "\u200b",
            "\u200d\ufeff",
            "\x00",
            "\u0000\u001f",
            "\U0001f600" * 9,
            "../../etc/passwd",
            "%s%n{0}",
            "<script>",
            "' OR 1=1 --",
        ]
    ),
)
HUGE_INTS = st.sampled_from([2**63, 2**64 + 1, 2**200, -(2**200), 10**40])
BAD_FLOATS = st.sampled_from([float("nan"), float("inf"), float("-inf"), 1e308, -1e308, 5e-324])
CONTAINERS = st.one_of(
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)
)
# TOML has no null and the test writer drops empty arrays: containers in matrices are non-empty
TOML_CONTAINERS = st.one_of(
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=5), st.integers(), min_size=1, max_size=3),
)
NOT_A_NUMBER = st.one_of(st.text(alphabet="xyz!@ \u202e\u200b", min_size=1, max_size=10), CONTAINERS)
TOML_NOT_A_NUMBER = st.one_of(st.text(alphabet="xyz!@ \u202e\u200b", min_size=1, max_size=10), TOML_CONTAINERS)


def _ints_outside(lo: int, hi: int):
    return st.one_of(
        st.integers(max_value=lo - 1), st.integers(min_value=hi + 1), HUGE_INTS.filter(lambda v: not lo <= v <= hi)
    )


def _floats_outside(lo: float, hi: float):
    return st.one_of(
        st.floats(max_value=lo, exclude_max=True, allow_nan=False),
        st.floats(min_value=hi, exclude_min=True),
        BAD_FLOATS.filter(lambda v: not lo <= v <= hi),
    )


NOT_A_STRING = st.one_of(st.integers(), st.floats(), st.booleans(), CONTAINERS)
# (field path, values that field must refuse); the path is the JSON path the error must name
AUDIO_JUNK = [
    (
        ("seed",),
        st.one_of(_ints_outside(0, 2**32 - 1), st.floats(0.5, 1e9).filter(lambda v: v != int(v)), NOT_A_NUMBER),
    ),
    (("model",), st.one_of(NOT_A_STRING, st.just(""), st.just("m" * 513))),
    (
        ("prompt",),
        st.one_of(NOT_A_STRING, st.integers(MAX_PROMPT_CHARS + 1, 3 * MAX_PROMPT_CHARS).map(lambda n: "p" * n)),
    ),
    (
        ("dtype",),
        st.one_of(ODD_TEXT.filter(lambda s: s not in ("float16", "bfloat16", "float32", "auto")), st.integers()),
    ),
    (("quantize_bits",), st.one_of(st.integers().filter(lambda v: v not in (4, 8)), ODD_TEXT, CONTAINERS)),
    (("generation_config",), st.one_of(st.integers(), ODD_TEXT, st.lists(st.integers(), max_size=2))),
    (("generation_config", "max_new_tokens"), st.one_of(_ints_outside(1, 65_536), NOT_A_NUMBER)),
    (("generation_config", "temperature"), st.one_of(_floats_outside(0.0, 100.0), NOT_A_NUMBER)),
    (("generation_config", "top_p"), st.one_of(_floats_outside(0.0, 1.0), NOT_A_NUMBER)),
    (("generation_config", "do_sample"), st.one_of(st.integers(2, 2**70), CONTAINERS, st.just("maybe"))),
    (("audio_prompt",), st.one_of(st.just({}), st.just({"wav_path": "a.wav", "base64": "AAAA"}), NOT_A_STRING)),
]
GPT_JUNK = [
    (
        ("messages",),
        st.one_of(
            st.just([]),
            NOT_A_STRING.filter(lambda v: not isinstance(v, list) or not v),
            st.lists(st.integers(), min_size=1, max_size=3),
            st.integers(257, 300).map(lambda n: [{"role": "user", "content": "x"}] * n),
        ),
    ),
    (
        ("messages", 0, "role"),
        st.one_of(ODD_TEXT.filter(lambda s: s not in ("system", "user", "assistant", "tool")), st.integers()),
    ),
    (
        ("messages", 0, "content"),
        st.one_of(
            st.integers(),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
            st.just([{"type": "video", "url": "x"}]),
            st.just([{"type": "text", "text": ""}]),
            st.just("c" * (MAX_PROMPT_CHARS + 1)),
        ),
    ),
    (("generation_config", "num_return_sequences"), _ints_outside(1, 16)),
    (("generation_config", "num_beams"), _ints_outside(1, 64)),
    (("generation_config", "stop_strings"), st.one_of(st.just([""]), st.just(["s"] * 17), ODD_TEXT)),
    (("tools",), st.one_of(st.integers(), ODD_TEXT, st.lists(st.integers(), min_size=1, max_size=2))),
    (("seed",), st.one_of(_ints_outside(0, 2**32 - 1), NOT_A_NUMBER)),
]
RAW = "\x00RAW\x00"  # placeholder replaced by raw JSON text (deep nesting) after json.dumps


def _set(doc, path, value):
    doc = json.loads(json.dumps(doc))
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    return doc


def _expected_path(path) -> str:
    return "$." + path[0]


@st.composite
def hostile_tasks(draw):
    """(JSON text, what the error must contain) for a task that must be refused."""
    kind = draw(st.sampled_from(["audio", "gpt"]))
    base = AUDIO_BASE if kind == "audio" else GPT_BASE
    family = draw(st.sampled_from(["field", "field", "field", "unknown", "surrogate", "nonfinite", "deep"]))
    if family == "field":
        path, junk = draw(st.sampled_from(AUDIO_JUNK if kind == "audio" else GPT_JUNK))
        doc = _set(base, path, draw(junk))
        nonfinite = any((isinstance(v, float) and v != v) or v in (float("inf"), float("-inf")) for v in _leaves(doc))
        return json.dumps(doc), ("not valid JSON" if nonfinite else _expected_path(path))
    if family == "unknown":
        where = draw(st.sampled_from([(), ("generation_config",)] + ([("messages", 0)] if kind == "gpt" else [])))
        key = draw(
            ODD_TEXT.filter(
                lambda k: (
                    k not in base
                    and k not in base["generation_config"]
                    and k not in ("role", "content", "tool_call_id", "tool_calls")
                )
            )
        )
        doc = json.loads(json.dumps(base))
        target = doc
        for part in where:
            target = target[part]
        target[key] = draw(st.one_of(st.integers(), ODD_TEXT))
        return json.dumps(doc), "unknown field"
    if family == "surrogate":
        field = "prompt" if kind == "audio" else "model"
        return json.dumps({**base, field: draw(SURROGATES)}), f"$.{field}"
    if family == "nonfinite":
        path = ("generation_config", "temperature") if draw(st.booleans()) else ("seed",)
        return json.dumps(
            _set(base, path, draw(st.sampled_from([float("nan"), float("inf"), float("-inf")])))
        ), "not valid JSON"
    depth = draw(st.integers(2_000, 10_000))
    text = json.dumps({**base, "tools" if kind == "gpt" else "prompt": RAW})
    return text.replace(json.dumps(RAW), "[" * depth + "]" * depth), "nested too deeply"


def _leaves(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _leaves(v)
    else:
        yield obj


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=hostile_tasks(), command=st.sampled_from(["validate", "validate", "exec"]))
def test_hostile_task_documents_give_one_error_block(capsys, case, command):
    text, expect = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "task.json"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        code, out, err = _cli(
            capsys, "task documents", command, str(path), *(["--out", tmp] if command == "exec" else [])
        )
    assert_one_error_block(code, err, expect)
    if command == "validate":
        assert err.startswith(f"INVALID {path}") and "OK" not in out


@st.composite
def junk_bytes(draw):
    return draw(
        st.one_of(
            st.binary(max_size=4096),
            st.sampled_from(
                [
                    b"",
                    b"\xff\xfe\x00",
                    b"\x00" * 100,
                    b"{",
                    b"[" * 5000,
                    b"\xef\xbb\xbf{}",
                    b'{"model": "\xff"}',
                    b"null",
                    b"true",
                    b"1e999",
                    b"-0",
                    b'"\\ud800"',
                ]
            ),
        )
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=junk_bytes(), command=st.sampled_from(["validate", "exec"]))
def test_binary_garbage_task_files(capsys, data, command):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "garbage.json"
        path.write_bytes(data)
        code, _, err = _cli(
            capsys, "garbage task files", command, str(path), *(["--out", tmp] if command == "exec" else [])
        )
    assert_one_error_block(code, err, "$")


def test_files_that_are_not_task_files(capsys, tmp_path):
    (tmp_path / "empty.json").write_bytes(b"")
    (tmp_path / "folder.json").mkdir()
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:  # over the 16 MiB task file limit, refused before it is read
        fh.write(b'{"model": "x", "prompt": "')
        fh.truncate(MAX_TASK_FILE_BYTES + 10)
    cases = {
        "empty.json": "not valid JSON",
        "folder.json": "cannot read (Is a directory)",
        "missing.json": "cannot read (No such file or directory)",
        "big.json": f"the limit is {MAX_TASK_FILE_BYTES}",
    }
    for name, expect in cases.items():
        for command in ("validate", "exec"):
            code, _, err = (
                _cli(capsys, "special files", command, str(tmp_path / name), "--out", str(tmp_path))
                if command == "exec"
                else _cli(capsys, "special files", command, str(tmp_path / name))
            )
            assert_one_error_block(code, err, expect)


def test_ten_megabyte_prompt_and_messages_are_refused_by_length(capsys, tmp_path):
    ten_mb = "p" * 10_000_000
    docs = {
        "audio.json": ({**AUDIO_BASE, "prompt": ten_mb}, "$.prompt: String should have at most 100000 characters"),
        "gpt.json": ({**GPT_BASE, "messages": [{"role": "user", "content": ten_mb}]}, "$.messages[0].content"),
        "many.json": (
            {**GPT_BASE, "messages": [{"role": "user", "content": "m" * 60_000}] * 2},
            f"the limit is {MAX_PROMPT_CHARS}",
        ),
    }
    for name, (doc, expect) in docs.items():
        (tmp_path / name).write_text(json.dumps(doc))
        code, _, err = _cli(capsys, "special files", "validate", str(tmp_path / name))
        assert_one_error_block(code, err, expect)
        assert len(err) < 5_000  # the error names the problem; it does not echo 10 MB back


# --- matrices ------------------------------------------------------------------------------
MATRIX_BASE = {
    "schema_version": 1,
    "name": "hostile",
    "repeats": 1,
    "workers": 1,
    "timeout_s": 60,
    "tasks": [{"name": "gpt", "task": GPT_TASK}],
    "axes": {"seed": [1], "threads": [1], "batch_size": [1]},
}
NAME_JUNK = st.one_of(
    ODD_TEXT.filter(
        lambda s: (
            not s.isascii() or not s[:1].isalnum() or len(s) > 64 or any(c not in "_.-" and not c.isalnum() for c in s)
        )
    ),
    st.just("n" * 65),
    st.integers(),
    TOML_CONTAINERS,
)
MATRIX_JUNK = [
    (("name",), NAME_JUNK, "$.name"),
    (("repeats",), st.one_of(_ints_outside(1, 100), TOML_NOT_A_NUMBER, st.just(float("nan"))), "$.repeats"),
    (("workers",), st.one_of(_ints_outside(1, 16), TOML_NOT_A_NUMBER), "$.workers"),
    (
        ("timeout_s",),
        st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(float("nan")), TOML_NOT_A_NUMBER),
        "$.timeout_s",
    ),
    (("description",), st.one_of(st.integers(), TOML_CONTAINERS), "$.description"),
    (("tasks",), st.one_of(st.integers(), ODD_TEXT, st.lists(st.integers(), min_size=1, max_size=2)), "$.tasks"),
    (("tasks", 0, "name"), NAME_JUNK, "$.tasks"),
    (("tasks", 0, "kind"), ODD_TEXT.filter(lambda s: s not in ("audio", "gpt", "audioldm", "chain")), "$.tasks"),
    (("tasks", 0, "task", "seed"), _ints_outside(0, 2**32 - 1), "$.tasks[0] (gpt): $.seed"),
    (("tasks", 0, "task", "messages"), st.just([]), "$.tasks[0] (gpt): $.messages"),
    (
        ("tasks", 0, "task", "generation_config", "temperature"),
        _floats_outside(0.0, 100.0),
        "$.tasks[0] (gpt): $.generation_config",
    ),
    (
        ("tasks", 0, "axes"),
        st.dictionaries(
            ODD_TEXT.filter(
                lambda s: s not in ("dtype", "quantize_bits", "seed", "device", "threads", "batch_size", "profile")
            ),
            st.integers(),
            min_size=1,
            max_size=2,
        ),
        "unknown axis",
    ),
    (
        ("axes", "dtype"),
        st.lists(
            ODD_TEXT.filter(lambda s: s not in ("float16", "bfloat16", "float32", "auto")), min_size=1, max_size=3
        ),
        "$.axes.dtype",
    ),
    (("axes", "seed"), st.lists(_ints_outside(0, 2**32 - 1), min_size=1, max_size=3), "$.axes.seed"),
    (
        ("axes", "device"),
        st.lists(
            ODD_TEXT.filter(lambda s: s not in ("cpu", "cuda", "all") and not s.startswith("cuda:")),
            min_size=1,
            max_size=2,
        ),
        "$.axes.device",
    ),
    (("axes", "batch_size"), st.lists(_ints_outside(1, 64), min_size=1, max_size=2), "$.axes.batch_size"),
    (
        ("axes", "profile"),
        st.lists(ODD_TEXT.filter(lambda s: s not in ("on", "off")), min_size=1, max_size=2),
        "$.axes.profile",
    ),
    (("axes", "quantize_bits"), st.lists(st.integers(min_value=9), min_size=1, max_size=2), "$.axes.quantize_bits"),
    (("axes", "colour"), st.lists(st.integers(), max_size=2), "$.axes.colour: unknown field"),
    (("thresholds", "cosine_min"), _floats_outside(-1.0, 1.0).filter(lambda v: v == v), "$.thresholds.cosine_min"),
    (
        ("thresholds", "rel_l2_max"),
        st.one_of(st.floats(max_value=0, exclude_max=True), st.just(float("nan"))),
        "$.thresholds.rel_l2_max",
    ),
    (("thresholds", "hamming"), st.integers(), "$.thresholds.hamming: unknown field"),
    (
        ("gates", "fail_on"),
        st.lists(ODD_TEXT, min_size=1, max_size=2).filter(
            lambda v: any(x not in ("not_ready", "ready_with_tolerance", "failed", "seed_insensitive") for x in v)
        ),
        "$.gates.fail_on",
    ),
    (("gates", "verdict_dimensions"), st.just([]), "$.gates.verdict_dimensions"),
    (("include",), st.just([{"colour": 1}]), "unknown key 'colour'"),
    (("exclude",), st.just([{"seed": 1, "\u200bseed": 2}]), "unknown key"),
    (("schema_version",), st.integers(2, 2**200), "newer than this harness supports"),
    (("unknown_top_level",), st.one_of(st.integers(), ODD_TEXT), "unknown field"),
]


@st.composite
def hostile_matrices(draw):
    """(TOML bytes, what the error must contain) for a matrix that must be refused."""
    family = draw(st.sampled_from(["field"] * 6 + ["raw", "binary", "deep", "huge", "file"]))
    if family == "field":
        path, junk, expect = draw(st.sampled_from(MATRIX_JUNK))
        doc = json.loads(json.dumps(MATRIX_BASE))
        target = doc
        for part in path[:-1]:
            target = target[part] if isinstance(part, int) else target.setdefault(part, {})
        target[path[-1]] = draw(junk)
        text = _toml(doc)
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError:  # e.g. an emoji written as a JSON surrogate pair: not TOML
            expect = "not valid TOML"
        return text.encode("utf-8", "surrogatepass"), expect
    if family == "raw":  # arbitrary text: not TOML, or TOML without a name and tasks
        return draw(st.text(max_size=200)).encode("utf-8", "surrogatepass"), "error:"
    if family == "binary":
        return draw(junk_bytes()), "error:"
    if family == "deep":
        depth = draw(st.integers(2_000, 10_000))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a = ", "}")]))
        return (
            _toml(MATRIX_BASE) + "deep = " + opener * depth + "1" + closer * depth + "\n"
        ).encode(), "nested too deeply"
    if family == "huge":  # refused before anything is materialised
        seeds = draw(st.integers(2_000, 5_000))
        doc = {
            **MATRIX_BASE,
            "repeats": draw(st.integers(10, 100)),
            "workers": draw(st.integers(2, 16)),
            "axes": {"seed": list(range(seeds)), "threads": [1, 2], "dtype": ["float32", "bfloat16"]},
        }
        return _toml(doc).encode(), "cells"
    target = draw(
        st.sampled_from(
            [
                "/etc/passwd",
                "/etc",
                "/nonexistent/task.json",
                "../../../../../../../../etc/hostname",
                "../" * 30 + "nowhere.json",
                "/dev/null",
                "\u202e.json",
                ".",
            ]
        )
    )
    doc = {**MATRIX_BASE, "tasks": [{"name": "gpt", "file": target}]}
    return _toml(doc).encode(), "$.tasks[0] (gpt)"


@settings(
    max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(case=hostile_matrices(), command=st.sampled_from(["expand", "expand", "run"]))
def test_hostile_matrices_give_one_error_block(capsys, case, command):
    data, expect = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matrix.toml"
        path.write_bytes(data)
        args = (
            ["expand", "--json", str(path)]
            if command == "expand"
            else ["run", str(path), "--out", str(Path(tmp) / "run"), "--no-progress"]
        )
        code, out, err = _cli(capsys, "matrices", *args)
        if command == "run":
            assert not (Path(tmp) / "run").exists(), "a refused matrix must not leave a run directory"
    assert_one_error_block(code, err, expect)
    assert out == ""


def test_matrix_files_that_are_not_matrices(capsys, tmp_path):
    (tmp_path / "empty.toml").write_bytes(b"")
    (tmp_path / "folder.toml").mkdir()
    (tmp_path / "garbage.toml").write_bytes(bytes(range(256)) * 8)
    cases = {
        "empty.toml": "$.name: Field required",
        "folder.toml": "cannot read (Is a directory)",
        "missing.toml": "cannot read (No such file or directory)",
        "garbage.toml": "not valid TOML",
    }
    for name, expect in cases.items():
        for args in (["expand", str(tmp_path / name)], ["run", str(tmp_path / name), "--out", str(tmp_path / "r")]):
            code, _, err = _cli(capsys, "special files", *args)
            assert_one_error_block(code, err, expect)


def test_task_nested_within_the_json_limit_is_refused_in_a_matrix_not_a_traceback(capsys, tmp_path):
    """A task whose free-form field (template_args) is nested ~300 deep parses, but cannot be
    serialised into a cell: the matrix is refused with one error line (no traceback)."""
    nested = "[" * 300 + "]" * 300
    (tmp_path / "t.json").write_text(
        json.dumps({**GPT_BASE, "template_args": {"x": RAW}}).replace(json.dumps(RAW), nested)
    )
    (tmp_path / "m.toml").write_text(_toml({**MATRIX_BASE, "tasks": [{"name": "gpt", "file": "t.json"}]}))
    code, _, err = _cli(capsys, "special files", "expand", str(tmp_path / "m.toml"))
    assert_one_error_block(code, err)


# --- a few as a user runs them: fresh processes --------------------------------------------
def _subprocess(*args: str, timeout: float = 60, limit_as: int | None = None) -> subprocess.CompletedProcess:
    FUZZED["subprocess"] += 1

    def cap():
        if limit_as:
            resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=cap,
        env={**os.environ, "HARNESS_DEBUG": ""},
    )


def test_hostile_files_in_fresh_processes(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 10_000 + "]" * 10_000)
    (tmp_path / "nan.json").write_text(
        '{"model": "tiny:gpt2", "messages": [{"role": "user", "content": "x"}], "seed": NaN}'
    )
    (tmp_path / "garbage.json").write_bytes(os.urandom(64 * 1024))
    (tmp_path / "deep.toml").write_text("x = " + "[" * 10_000 + "]" * 10_000 + "\n")
    (tmp_path / "huge.toml").write_text(
        _toml({**MATRIX_BASE, "repeats": 100, "workers": 16, "axes": {"seed": list(range(2_000))}})
    )
    runs = [
        (["validate", str(tmp_path / "deep.json")], "JSON nested too deeply"),
        (["exec", str(tmp_path / "nan.json"), "--out", str(tmp_path)], "NaN is not valid JSON"),
        (["validate", str(tmp_path / "garbage.json"), str(tmp_path / "deep.json")], "not valid JSON"),
        (["expand", str(tmp_path / "deep.toml")], "nested too deeply"),
        (["run", str(tmp_path / "huge.toml"), "--out", str(tmp_path / "run")], "cells"),
    ]
    for args, expect in runs:
        start = time.monotonic()
        res = _subprocess(*args)
        assert time.monotonic() - start < 30
        if args[0] == "validate" and len(args) == 3:  # two files: one INVALID block each, exit 2
            assert res.returncode == 2 and res.stderr.count("INVALID") == 2 and "Traceback" not in res.stderr
            continue
        assert_one_error_block(res.returncode, res.stderr, expect)


# --- special files and values that must be refused at the door -----------------------------
@pytest.mark.parametrize("command", ["validate", "expand"])
def test_endless_special_files_are_refused_quickly(command, tmp_path):
    res = _subprocess(command, "/dev/zero", timeout=20, limit_as=3 * 2**30)
    assert_one_error_block(res.returncode, res.stderr, "/dev/zero")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    res = _subprocess(command, str(fifo), timeout=10)
    assert_one_error_block(res.returncode, res.stderr, str(fifo))


@pytest.mark.parametrize(
    "top,axes,include",
    [
        ({}, {"threads": [-3]}, None),
        ({}, {"threads": [2**200]}, None),
        ({}, {}, [{"batch_size": 1000}]),
        ({}, {}, [{"device": "tpu"}]),
        ({"timeout_s": float("inf")}, {}, None),
        ({"thresholds": {"rel_l2_max": float("inf")}}, {}, None),
    ],
)
def test_matrix_values_accepted_today_that_should_be_refused(capsys, tmp_path, top, axes, include):
    doc = {**MATRIX_BASE, **top, "axes": {**MATRIX_BASE["axes"], **axes}, **({"include": include} if include else {})}
    (tmp_path / "m.toml").write_text(_toml(doc))
    code, _, err = _cli(capsys, "matrices", "expand", str(tmp_path / "m.toml"))
    assert_one_error_block(code, err)


# --- issue #15: values, bounds and special files found by the red team ------------------------
@pytest.mark.parametrize(
    "top,axes",
    [
        ({}, {"seed": [True]}),
        ({}, {"threads": []}),
        ({}, {"batch_size": []}),
        ({"schema_version": -7}, {}),
        ({"thresholds": {"fingerprint_bits": 100_000_000}}, {}),
    ],
    ids=["seed-true", "threads-empty", "batch-empty", "schema-negative", "fingerprint-bits-1e8"],
)
def test_lax_matrix_values_are_refused(capsys, tmp_path, top, axes):
    doc = {**MATRIX_BASE, **top, "axes": {**MATRIX_BASE["axes"], **axes}}
    (tmp_path / "m.toml").write_text(_toml(doc))
    code, _, err = _cli(capsys, "matrices", "expand", str(tmp_path / "m.toml"))
    assert_one_error_block(code, err)


def test_include_rules_are_bounded_before_cells_are_built(capsys, tmp_path):
    doc = {**MATRIX_BASE, "repeats": 100, "workers": 16, "include": [{"seed": s} for s in range(1_500)]}
    (tmp_path / "m.toml").write_text(_toml(doc))
    code, _, err = _cli(capsys, "matrices", "expand", str(tmp_path / "m.toml"))
    assert_one_error_block(code, err, "cells")


def test_include_and_exclude_rules_are_bounded(capsys, tmp_path):
    doc = {**MATRIX_BASE, "include": [{"seed": s} for s in range(2_001)], "exclude": [{"seed": 1}]}
    (tmp_path / "m.toml").write_text(_toml(doc))
    code, _, err = _cli(capsys, "matrices", "expand", str(tmp_path / "m.toml"))
    assert_one_error_block(code, err, "include")


def test_a_matrix_whose_excludes_remove_every_cell_is_refused(capsys, tmp_path):
    doc = {**MATRIX_BASE, "exclude": [{"task": MATRIX_BASE["tasks"][0]["name"]}]}
    (tmp_path / "m.toml").write_text(_toml(doc))
    code, _, err = _cli(capsys, "matrices", "run", str(tmp_path / "m.toml"), "--out", str(tmp_path / "run"))
    assert_one_error_block(code, err, "no cells")
    assert not (tmp_path / "run").exists()


def test_duplicate_json_keys_are_refused(capsys, tmp_path):
    path = tmp_path / "dup.json"
    path.write_text('{"model": "tiny:gpt2", "seed": 1, "seed": 2, "messages": [{"role": "user", "content": "x"}]}')
    code, _, err = _cli(capsys, "tasks", "validate", str(path))
    assert code == 2 and "duplicate key 'seed'" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args", [["--threads", "100000"], ["--batch-size", "0"], ["--batch-size", "100000"], ["--threads", "0"]]
)
def test_exec_resource_options_are_bounded(capsys, tmp_path, args):
    FUZZED["exec options"] += 1
    (tmp_path / "t.json").write_text(json.dumps(GPT_BASE))
    with pytest.raises(SystemExit) as exc:
        main(["exec", str(tmp_path / "t.json"), "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "must be" in err and "Traceback" not in err


def _wav(rate: int, channels: int, frames: int = 10) -> bytes:
    """A PCM16 WAV header written by hand, so rates and channel counts a writer refuses fit."""
    import struct

    data = b"\0" * (frames * max(channels, 1) * 2)
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * channels * 2, channels * 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    "rate,channels,expect",
    [(10_000_019, 1, "sample rate"), (0, 1, "sample rate 0"), (16000, 0, "WAV")],
    ids=["rate-10MHz", "rate-0", "channels-0"],
)
def test_hostile_prompt_wavs_are_refused_before_work(rate, channels, expect):
    from harness.engines.audio_io import read_wav_bytes

    FUZZED["prompt wav"] += 1
    start = time.monotonic()
    with pytest.raises(ValueError, match=expect):
        read_wav_bytes(_wav(rate, channels), "audio_prompt.base64")
    assert time.monotonic() - start < CALL_LIMIT_S


def test_a_fifo_or_oversized_prompt_wav_is_refused_without_blocking(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from harness.engines.audio_io import MAX_PROMPT_WAV_BYTES, load_audio_prompt

    monkeypatch.setenv("HARNESS_ALLOWED_PATHS", str(tmp_path))
    fifo = tmp_path / "prompt.wav"
    os.mkfifo(fifo)
    FUZZED["prompt wav"] += 2
    with pytest.raises(ValueError, match="not a regular file"):
        load_audio_prompt(SimpleNamespace(wav_path=str(fifo), base64=None), 32000)
    big = tmp_path / "big.wav"
    with open(big, "wb") as fh:
        fh.truncate(MAX_PROMPT_WAV_BYTES + 10)
    with pytest.raises(ValueError, match="limit"):
        load_audio_prompt(SimpleNamespace(wav_path=str(big), base64=None), 32000)


def test_a_cuda_device_that_is_not_there_is_named_not_an_attribute_error():
    """``--device cuda:7`` on CPU-only torch raised ``AttributeError: _cuda_resetPeakMemoryStats``."""
    import torch

    from harness.execution.execute import _check_cuda_device
    from harness.models.loading import UnsupportedConfiguration

    FUZZED["devices"] += 1
    with pytest.raises(UnsupportedConfiguration, match="cuda:99"):
        _check_cuda_device(torch, "cuda:99")


# --- messages that name the argument or the file (a library's words named neither) ------------
def _named_cases(tmp: Path) -> list[tuple[list[str], list[str]]]:
    (tmp / "file.txt").write_text("x")
    task = tmp / "gpt.json"
    task.write_text(json.dumps(GPT_BASE))
    (tmp / "nul.toml").write_text(_toml({**MATRIX_BASE, "tasks": [{"name": "gpt", "file": "a\x00b.json"}]}))
    (tmp / "ok.toml").write_text(_toml({**MATRIX_BASE, "tasks": [{"name": "gpt", "file": str(task)}]}))
    (tmp / "cert.json").write_text(json.dumps({"schema_version": 2, "passed": True, "summary": "CERTIFIED"}))
    (tmp / "rep").mkdir()
    (tmp / "rep" / "report.json").write_text(json.dumps({"schema_version": 3, "configs": 5}))
    f = str(tmp / "file.txt")
    return [
        (["validate", "a\x00b.json"], ["argument files", "NUL byte"]),
        (["exec", str(task), "--out", "x\x00y"], ["argument out", "NUL byte"]),
        (["run", str(tmp / "ok.toml"), "--out", "r\x00"], ["argument out", "NUL byte"]),
        (["verify", str(tmp / "cert.json"), "--trusted-keys", "k\x00"], ["argument trusted-keys", "NUL byte"]),
        (["expand", str(tmp / "nul.toml")], ["$.tasks[0] (gpt)", "a path cannot hold a NUL byte"]),
        (["exec", str(task), "--out", f"{f}/sub"], [f"{f}/sub: a part of this path is a file, not a folder"]),
        (["run", str(tmp / "ok.toml"), "--out", f"{f}/run"], [f"{f}/run: a part of this path is a file"]),
        (["report", f"{f}/run"], [f"{f}/run/manifest.json: a part of this path is a file"]),
        (["keygen", f"{f}/key"], [f"{f}: exists and is not a folder"]),
        (["show", f"{f}/x"], [f"{f}/x: no such report"]),
        (["verify", str(tmp / "cert.json")], ["cert.json: not a certificate: $.harness_version: Field required"]),
        (["show", str(tmp / "rep")], ["report.json: not a report this harness wrote: $.run_id: Field required"]),
        (["exec", str(task), "--device", "cuda:7", "--out", str(tmp)], ["cuda:7"]),
    ]


def test_errors_name_the_argument_or_the_file(capsys, tmp_path):
    """Before: ``embedded null byte``, ``[Errno 20] Not a directory``, ``FileExistsError: [Errno
    17] File exists: 'file.txt'``, a pydantic dump of three lines for report.json, ``VERIFIED``
    for a signed-looking object that holds no certificate, and ``AttributeError:
    _cuda_resetPeakMemoryStats`` for a CUDA device CPU torch does not have."""
    for args, expect in _named_cases(tmp_path):
        code, _, err = _cli(capsys, "named messages", *args)
        assert_one_error_block(code, err, *expect)
        assert "Error:" not in err and "Errno" not in err, err  # our words, not a library's


@pytest.mark.parametrize(
    "args, expect",
    [
        (["show", ".", "--width", "-5"], "width must be 20..10000"),
        (["report", ".", "--formats", "md,xx"], "unknown report format 'xx'"),
        (["run", "m.toml", "--formats", "pdf"], "unknown report format 'pdf'"),
        (["run", "m.toml", "--max-cells", "-1"], "max cells must be 1.."),
    ],
)
def test_bad_options_are_usage_errors_before_any_work(capsys, args, expect):
    """``--formats xx`` used to fail after every cell had run; ``--width -5`` printed nothing, exit 0."""
    FUZZED["named messages"] += 1
    with pytest.raises(SystemExit) as stop:
        main(args)
    err = capsys.readouterr().err
    assert stop.value.code == 2 and expect in err and "Traceback" not in err


def _exec_error(tmp_path, capsys, task: dict) -> str:
    (tmp_path / "t.json").write_text(json.dumps(task))
    try:
        code = main(["exec", str(tmp_path / "t.json"), "--out", str(tmp_path / "out")])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_a_zero_channel_prompt_wav_is_one_line_naming_the_field(tmp_path, capsys, monkeypatch):
    import struct

    monkeypatch.chdir(tmp_path)
    fmt = struct.pack("<HHIIHH", 1, 0, 16000, 0, 0, 16)  # 0 channels, 0-byte blocks: scipy divides by it
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", 4) + b"\0" * 4
    (tmp_path / "zero.wav").write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)
    task = {
        "model": "tiny:musicgen",
        "prompt": "x",
        "seed": 1,
        "generation_config": {"max_new_tokens": 4},
        "audio_prompt": {"wav_path": "zero.wav"},
    }
    FUZZED["prompt wav"] += 1
    err = _exec_error(tmp_path, capsys, task)
    assert "audio_prompt.wav_path" in err and "0 channels" in err and "ZeroDivisionError" not in err


def test_a_nul_byte_in_the_prompt_path_is_one_line_naming_the_field(tmp_path, capsys):
    task = {
        "model": "tiny:musicgen",
        "prompt": "x",
        "seed": 1,
        "generation_config": {"max_new_tokens": 4},
        "audio_prompt": {"wav_path": "a\u0000b.wav"},
    }
    FUZZED["task documents"] += 1
    err = _exec_error(tmp_path, capsys, task)
    assert "audio_prompt" in err and "NUL" in err and "embedded null byte" not in err


def test_an_include_rule_with_a_list_is_one_line_naming_the_field(tmp_path):
    from harness.spec.matrix import MatrixError, load_matrix

    task = Path(__file__).resolve().parents[2] / "matrices" / "tasks" / "tiny-gpt2-chatbot.json"
    (tmp_path / "m.toml").write_text(
        f'name = "m"\n[[tasks]]\nname = "g"\nfile = "{task}"\n[[include]]\ndtype = ["float32", "bfloat16"]\n'
    )
    FUZZED["matrices"] += 1
    with pytest.raises(MatrixError) as err:
        load_matrix(tmp_path / "m.toml")
    assert str(err.value).count("\n") == 0 and "$.include[0].dtype" in str(err.value)
