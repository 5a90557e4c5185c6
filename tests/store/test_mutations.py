"""Every field of a stored run mutated, one at a time: the harness names what is wrong or
goes on, never a library's error naming nothing.

A hypothesis search over the three documents a user can edit (manifest.json, a
results.jsonl record, report.json): one leaf replaced by a value of another type, or its key
deleted, then ``report``, ``verify``, ``show`` or ``bundle`` in this process. An outcome is
acceptable when it is exit 0/1 (the run or its verdict still make sense), or one ``error:``
line that is ours: the catch-all's ``(HARNESS_DEBUG=1 shows the traceback)`` means a
library's words got through. It found a ``TypeError`` for ``environment.libraries = 5``, a
``KeyError`` in the terminal renderer for an unknown level in report.json, and pydantic
dumps for a validator's ``source`` and a record's ``model_meta.quantization``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import print_through_capture
from harness.cli.main import main
from tests.store.test_trust import good_run  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow
TRIED: Counter = Counter()
ODD = [None, 5, -1, "x", [], {}, True, 1e308, "../../etc/passwd", [1, 2], {"a": 1}, 0, "", 2**70]
DELETE = "<delete>"


@pytest.fixture(scope="module", autouse=True)
def _report_count(request):
    yield
    print_through_capture(
        request,
        f"mutations of stored runs: {sum(TRIED.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(TRIED.items()))}); unnamed errors 0",
    )


def _leaves(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield prefix + (k,)
            yield from _leaves(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield prefix + (i,)
            yield from _leaves(v, prefix + (i,))


def _mutate(doc, path, value):
    cur = doc
    for p in path[:-1]:
        cur = cur[p]
    if value == DELETE and isinstance(cur, dict):
        del cur[path[-1]]
    else:
        cur[path[-1]] = None if value == DELETE else value


@settings(
    max_examples=int(os.environ.get("HARNESS_MUTATIONS", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_a_mutated_field_is_named_or_survived(capsys, good_run, data):  # noqa: F811
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        shutil.copytree(good_run, run, ignore=shutil.ignore_patterns(".lock", "report.*", "*.log"))
        target = data.draw(st.sampled_from(["manifest.json", "results.jsonl", "report.json"]))
        if target == "report.json":
            assert main(["report", str(run), "--formats", "json"]) == 0
        file = run / target
        lines = file.read_text().splitlines()
        line = data.draw(st.integers(0, len(lines) - 1)) if target == "results.jsonl" else None
        doc = json.loads(lines[line]) if line is not None else json.loads(file.read_text())
        path = data.draw(st.sampled_from(sorted(_leaves(doc), key=str)))
        _mutate(doc, path, data.draw(st.sampled_from([DELETE, *ODD])))
        if line is not None:
            lines[line] = json.dumps(doc)
            file.write_text("\n".join(lines) + "\n")
        else:
            file.write_text(json.dumps(doc))
        command = (
            ["show", str(run)]
            if target == "report.json"
            else data.draw(
                st.sampled_from(
                    [
                        ["report", str(run), "--formats", "json,md"],
                        ["verify", str(run)],
                        ["show", str(run)],
                        ["bundle", str(run), "--out", str(Path(tmp) / "b.zip")],
                    ]
                )
            )
        )
        TRIED[target] += 1
        capsys.readouterr()
        code = main(command)
        err = capsys.readouterr().err
    assert "Traceback" not in err and "HARNESS_DEBUG=1" not in err, (target, path, command[0], err[-600:])
    assert code in (0, 1) or (code == 2 and err.startswith("error:")), (target, path, code, err[-600:])
