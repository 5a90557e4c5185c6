"""nox sessions: tests, determinism (the CI gate on the smoke matrix), bench, lint, fleet, gpu.

Sessions reuse the current interpreter's environment (``python=False``) because torch and
transformers are large; install once with scripts/setup.sh.
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["tests", "determinism"]
nox.options.default_venv_backend = "none"


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The default test run: CPU-only, offline."""
    session.run("python", "-m", "pytest", "-q", *session.posargs)


@nox.session(python=False)
def determinism(session: nox.Session) -> None:
    """Run the smoke matrix on the tiny models and gate on its verdicts (exit 1 on failure)."""
    out = session.posargs[0] if session.posargs else "reports/runs/determinism-smoke"
    session.run("rm", "-rf", out, external=True)
    session.run("harness", "run", "matrices/smoke.toml", "--out", out, "--no-progress", external=True)


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """pytest-benchmark suites, saved per machine; from the second run on, compared with the
    previous saved run and failed on a median regression over 25%."""
    from pytest_benchmark.utils import get_machine_id

    saved = sorted(Path(".benchmarks", get_machine_id()).glob("*.json"))
    compare = ["--benchmark-compare", "--benchmark-compare-fail=median:25%"] if saved else []
    if not saved:
        session.log("no saved benchmark run for this machine: this run becomes the baseline")
    session.run("python", "-m", "pytest", "tests/bench", "-q", "--benchmark-only", "--benchmark-autosave",
                *compare, *session.posargs)


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """Byte-compile everything and validate every shipped task file."""
    session.run("python", "-m", "compileall", "-q", "harness", "tests")
    session.run("harness", "validate", *sorted(str(p) for p in Path("matrices/tasks").glob("*.json")),
                external=True)


@nox.session(python=False)
def fleet(session: nox.Session) -> None:
    """Fleet timings: the smoke matrix with --parallel 2 vs 1, and the Ray executor vs the local
    one (needs the [fleet] extra for the Ray part). Prints the load beside the figures."""
    session.run("python", "scripts/fleet_timing.py", *session.posargs)


@nox.session(python=False)
def gpu(session: nox.Session) -> None:
    """The GPU proof (issue #23): scripts/gpu_proof.sh on a machine with CUDA (refuses in one
    line, exit 2, without one). Results under $OUT (default out/gpu-proof); posargs name steps
    to rerun (smoke, cert, all, overhead)."""
    env = {"GPU_PROOF_STEPS": " ".join(session.posargs)} if session.posargs else {}
    session.run("bash", "scripts/gpu_proof.sh", external=True, env=env)
