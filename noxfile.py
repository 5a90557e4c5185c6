"""nox sessions: tests, determinism (the CI gate on the smoke matrix), bench, lint (ruff, mypy), docs, fleet, gpu.

Sessions reuse the current interpreter's environment (``python=False``) because torch and
transformers are large; install once with scripts/setup.sh.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests", "determinism"]
nox.options.default_venv_backend = "none"


def parallel_args(cpus: int | None) -> list[str]:
    """pytest-xdist workers: one per core, at most 4 (each test may start worker processes of its
    own and load models; more would trade memory for little). Whole files go to one worker
    (``--dist loadfile``): a file's module fixtures are built once. Measured on 2 cores: the suite
    took 1356 s serially and 917 s with 2 workers."""
    workers = min(4, cpus or 1)
    return ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The default test run: CPU-only, offline, in parallel on the machine's cores."""
    session.run("python", "-m", "pytest", "-q", *parallel_args(os.cpu_count()), *session.posargs)


def determinism_args(posargs: list[str]) -> tuple[str, list[str]]:
    """``nox -s determinism -- [RUN_DIR] [--junit FILE] [--matrix M]``: the run directory and the
    extra ``harness run`` arguments (``--junit FILE`` writes the verdicts as JUnit XML for CI)."""
    out, extra, matrix = "reports/runs/determinism-smoke", [], "matrices/smoke.toml"
    rest = list(posargs)
    while rest:
        arg = rest.pop(0)
        if arg in ("--junit", "--matrix") and rest:
            value = rest.pop(0)
        elif arg.startswith(("--junit=", "--matrix=")):
            arg, value = arg.split("=", 1)
        elif not arg.startswith("-"):
            out = arg
            continue
        else:
            raise ValueError(f"determinism: unknown argument {arg!r}; expected [RUN_DIR] [--junit FILE] [--matrix M]")
        if arg == "--junit":
            extra += ["--junit", value]
        else:
            matrix = value
    return out, [matrix, "--out", out, "--no-progress", *extra]


@nox.session(python=False)
def determinism(session: nox.Session) -> None:
    """Run the smoke matrix on the tiny models and gate on its verdicts (exit 1 on failure).
    ``nox -s determinism -- reports/runs/ci --junit reports/junit/determinism.xml`` also writes
    the verdicts as JUnit XML (GitLab, Jenkins and GitHub test reports read it)."""
    try:
        out, args = determinism_args(session.posargs)
    except ValueError as err:
        session.error(str(err))
    session.run("rm", "-rf", out, external=True)
    session.run("harness", "run", *args, external=True)


@nox.session(python=False)
def bench(session: nox.Session) -> None:
    """pytest-benchmark suites (the engines, the hot paths, a worker's start), saved per machine
    with every round's time; from the second run on, compared with the previous saved run by
    ``harness bench``: failed only on a slowdown a two-sample test calls significant
    (Mann-Whitney U at 95%) and of at least 25%. Then ``scripts/overhead.py --short``: the
    harness against bare transformers and the profile on against off, interleaved, each a
    Hodges-Lehmann ratio with its 95% interval (saved in .benchmarks/overhead/, not gated)."""
    from pytest_benchmark.utils import get_machine_id

    folder = Path(".benchmarks", get_machine_id())
    saved = sorted(folder.glob("*.json"))
    if not saved:
        session.log("no saved benchmark run for this machine: this run becomes the baseline")
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/bench",
        "-q",
        "--benchmark-only",
        "--benchmark-autosave",
        "--benchmark-save-data",
        *session.posargs,
    )
    new = [p for p in sorted(folder.glob("*.json")) if p not in saved]
    if saved and new:
        session.run(
            "harness",
            "bench",
            str(saved[-1]),
            str(new[-1]),
            "--check",
            "significant",
            "--min-effect",
            "25%",
            external=True,
        )
    overhead = Path(".benchmarks", "overhead", f"{get_machine_id()}-short.json")  # not among the saved runs
    overhead.parent.mkdir(parents=True, exist_ok=True)
    session.run("python", "scripts/overhead.py", "--short", "--json", str(overhead))


@nox.session(python=False)
def lint(session: nox.Session) -> None:
    """ruff (lint rules and formatting) and mypy (strict on all of harness/), configured in
    pyproject.toml and pinned in the [dev] extra; then byte-compile everything and validate
    every shipped task file. CI (.ci/run) runs it before the default sessions."""
    session.run("ruff", "check", ".", external=True)
    session.run("ruff", "format", "--check", ".", external=True)
    session.run("mypy", external=True)
    session.run("python", "-m", "compileall", "-q", "harness", "tests")
    session.run("harness", "validate", *sorted(str(p) for p in Path("matrices/tasks").glob("*.json")), external=True)


@nox.session(python=False)
def docs(session: nox.Session) -> None:
    """The docs site (mkdocs + mkdocs-material, the ``docs`` extra), built offline in strict mode
    into site/: a broken link or anchor, a page left out of the nav or a nav entry without a page
    fails. The command reference is written from the parser at build time (scripts/docs_hooks.py).
    CI (.ci/run) runs it after lint."""
    env = {
        "NO_MKDOCS_2_WARNING": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")])),
    }
    session.run("python", "-m", "mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs, env=env)


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
