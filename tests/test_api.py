"""The public Python API (harness.api, re-exported by ``harness``): its names are pinned, each is
typed and documented, ``import harness`` stays cheap, and the docs page documents the module."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import harness
from harness import api

ROOT = Path(__file__).resolve().parent.parent
NAMES = [
    "analyze_run",
    "assert_reproducible",
    "calibrate",
    "certify",
    "compare_runs",
    "load_run",
    "reproducibility_matrix",
    "run_matrix",
]


def test_the_public_names_are_pinned() -> None:
    assert sorted(api.__all__) == NAMES
    assert sorted(harness.PUBLIC) == NAMES and harness.__all__ == ["__version__", *harness.PUBLIC]
    for name in NAMES:
        assert getattr(harness, name) is getattr(api, name)


def test_every_name_is_typed_and_documented() -> None:
    for name in NAMES:
        fn = getattr(api, name)
        hints = fn.__annotations__  # strings: the heavy types are imported only for type checkers
        params = [p for p in inspect.signature(fn).parameters.values() if p.kind is not p.VAR_KEYWORD]
        assert "return" in hints and all(p.name in hints for p in params), name
        assert fn.__doc__ and len(fn.__doc__.strip()) > 40, name


def test_no_public_name_is_a_subpackage() -> None:
    """A subpackage imported later becomes an attribute of ``harness`` and would hide the function
    (``harness.compare`` is the comparison stage)."""
    assert not [
        name for name in NAMES if (ROOT / "harness" / name).is_dir() or (ROOT / "harness" / f"{name}.py").exists()
    ]


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        harness.no_such_thing  # noqa: B018
    except AttributeError as err:
        assert "no_such_thing" in str(err)
    else:
        raise AssertionError("harness.no_such_thing resolved")


def test_import_harness_imports_nothing_heavy() -> None:
    code = "import sys, harness; print(sorted(m for m in sys.modules if m.startswith(('harness', 'torch', 'pandas'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['harness']"


def test_the_docs_page_documents_the_module() -> None:
    page = (ROOT / "docs" / "api.md").read_text()
    assert "::: harness.api" in page
