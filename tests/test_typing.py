"""mypy is strict on every stage of ``harness/`` (``nox -s lint`` runs it): this pins the
configuration, so that a stage cannot be taken out of the check, or loosened by an override,
without this test saying so. Library edges (modules outside ``harness``) may be loosened; the
reasons are written beside them in pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

#: options that, set in an override, would check a module less than ``strict`` does
LOOSENING = {
    "ignore_errors": True,
    "strict": False,
    "disallow_untyped_defs": False,
    "disallow_incomplete_defs": False,
    "disallow_untyped_calls": False,
    "disallow_any_generics": False,
    "check_untyped_defs": False,
    "warn_return_any": False,
    "follow_imports": "skip",
    "ignore_missing_imports": True,
}


def loosened(mypy: dict[str, Any]) -> list[str]:
    """What in a ``[tool.mypy]`` table checks some of harness less than strictly."""
    problems = []
    if mypy.get("files") != ["harness"]:
        problems.append(f"files is {mypy.get('files')!r}, not the whole package ['harness']")
    if mypy.get("strict") is not True:
        problems.append("strict is not on for every module")
    for override in mypy.get("overrides", []):
        modules = override["module"] if isinstance(override["module"], list) else [override["module"]]
        ours = [m for m in modules if m == "harness" or m.startswith("harness.")]
        loose = [k for k, v in LOOSENING.items() if override.get(k) == v]
        if ours and loose:
            problems.append(f"{', '.join(ours)}: {', '.join(loose)}")
    excluded = [m for m in mypy.get("untyped_calls_exclude", []) if m == "harness" or m.startswith("harness.")]
    if excluded:
        problems.append(f"untyped calls allowed into {', '.join(excluded)}")
    return problems


def test_mypy_is_strict_on_all_of_harness() -> None:
    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert loosened(mypy) == []


def test_the_check_finds_a_loosened_stage() -> None:
    strict = {
        "files": ["harness"],
        "strict": True,
        "overrides": [{"module": ["scipy.*"], "ignore_missing_imports": True}],
    }
    assert loosened(strict) == []
    assert loosened({**strict, "files": ["harness/spec"]}) == [
        "files is ['harness/spec'], not the whole package ['harness']"
    ]
    one = {**strict, "overrides": [{"module": "harness.cli.*", "disallow_untyped_defs": False}]}
    assert loosened(one) == ["harness.cli.*: disallow_untyped_defs"]
    assert loosened({**strict, "untyped_calls_exclude": ["torch", "harness.engines"]}) == [
        "untyped calls allowed into harness.engines"
    ]
