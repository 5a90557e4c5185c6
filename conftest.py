"""Shared fixtures: tiny models built once per session into a private cache, offline env."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import settings

from harness.hubenv import apply_library_env

# CI is a gate: the same examples every run (a new random draw that finds a defect fails the
# change that happened to run it, not the one that made it). Local runs search afresh; scale
# the stored-run mutation search with HARNESS_MUTATIONS=3000.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")

ROOT = Path(__file__).parent
apply_library_env()  # the offline defaults, before any library loads


@pytest.fixture(scope="session", autouse=True)
def harness_home(tmp_path_factory) -> Path:
    """Tiny models are built into one session folder (unless the caller pinned one)."""
    if "CONSENSUS_HARNESS_HOME" not in os.environ:
        os.environ["CONSENSUS_HARNESS_HOME"] = str(tmp_path_factory.mktemp("harness-home"))
    return Path(os.environ["CONSENSUS_HARNESS_HOME"])


@pytest.fixture(scope="session")
def tiny_musicgen(harness_home) -> Path:
    from harness.models.tiny import ensure_tiny

    return ensure_tiny("musicgen")


@pytest.fixture(scope="session")
def tiny_gpt2(harness_home) -> Path:
    from harness.models.tiny import ensure_tiny

    return ensure_tiny("gpt2")


@pytest.fixture(scope="session")
def python_exe() -> str:
    return sys.executable


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run ``python -m harness.cli ARGS`` in a fresh process (what a user types)."""
    import subprocess

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", *args],
        cwd=cwd or ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def cli():
    return run_cli


def print_through_capture(request, line: str) -> None:
    """Print a summary line (counts of fuzzed inputs, injected faults) past pytest's capture."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(f"\n{line}")
    else:
        print(line)
