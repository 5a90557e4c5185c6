"""Benchmarks (pytest-benchmark): the engines on the tiny models and the harness's hot paths.

They run with ``nox -s bench`` (``--benchmark-only``, saved and compared with the previous
saved run) or with ``HARNESS_BENCH=1``; the default test run skips them, because timing
loops make it slower and say nothing about correctness.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIP_REASON = "benchmark: run with `nox -s bench` (pytest --benchmark-only) or HARNESS_BENCH=1"


def bench_enabled(config: pytest.Config) -> bool:
    if os.environ.get("HARNESS_BENCH") == "1":
        return True
    try:
        return bool(config.getoption("--benchmark-only"))
    except ValueError:  # pytest-benchmark is not installed
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees every collected item of the session, not only this folder's: it only
    # touches items marked ``bench``.
    if bench_enabled(config):
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in items:
        if item.get_closest_marker("bench") is not None:
            item.add_marker(skip)


def load_script(name: str):
    """scripts/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_scale_module():
    """scripts/scale_analysis.py (the synthetic run builder) as a module."""
    return load_script("scale_analysis")


@pytest.fixture(scope="session")
def synthetic_small(tmp_path_factory) -> Path:
    """A 2,000-record synthetic run (10 configurations x 200 executions, with artifacts)."""
    run = tmp_path_factory.mktemp("bench-run") / "small"
    load_scale_module().synthesize_run(run, configs=10, seeds=5, repeats=5)
    return run


@pytest.fixture(scope="session")
def synthetic_20k(tmp_path_factory) -> Path:
    """A 20,000-record synthetic run (100 configurations x 200 executions)."""
    run = tmp_path_factory.mktemp("bench-run") / "large"
    load_scale_module().synthesize_run(run, configs=100, seeds=5, repeats=5)
    return run
