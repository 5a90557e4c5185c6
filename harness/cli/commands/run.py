"""``harness run MATRIX``: run every cell, write the reports, exit 1 when a gate fails.

SIGTERM and SIGHUP end it like Ctrl-C (``INTERRUPTIBLE``): status ``interrupted``, exit 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, cast

from harness.cli.arguments import (
    add_executor,
    add_formats,
    add_junit,
    add_max_cells,
    add_no_progress,
    add_trusted_keys,
    bounded,
)
from harness.cli.common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    check_junit_target,
    print_gates,
    print_notes,
    write_junit,
    write_reports,
)
from harness.errors import HarnessError

if TYPE_CHECKING:
    from harness.execution.executor import Executor
    from harness.execution.ray_executor import RayExecutor

NAME = "run"
INTERRUPTIBLE = True


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="run a matrix, write reports, exit 1 when a gate fails")
    s.add_argument("matrix")
    s.add_argument("--out", help="run directory (default reports/runs/<time>-<name>)")
    s.add_argument("--resume", action="store_true")
    add_no_progress(s)
    add_max_cells(s)
    add_formats(s)
    s.add_argument(
        "--parallel",
        type=bounded("parallel", 1, 64),
        metavar="N",
        help="CPU workers at once (default: the matrix's parallel key, 1); each CUDA device gets its own",
    )
    add_executor(s, help="local worker processes, or a Ray cluster (pip install -e '.[fleet]')")
    add_junit(s)
    add_trusted_keys(s, "calibrations the matrix names must be signed by one of these keys (docs/trust.md)")
    return s


def run(args: argparse.Namespace) -> int:
    from harness.execution.runner import RunInterrupted, run_matrix
    from harness.spec.matrix import load_matrix

    matrix = load_matrix(args.matrix, args.trusted_keys)
    check_junit_target(args.junit, [args.out] if args.out else [])
    executor = _executor(args)
    try:
        summary = run_matrix(
            matrix,
            Path(args.out) if args.out else None,
            resume=args.resume,
            progress=not args.no_progress,
            max_cells=args.max_cells,
            executor=executor,
            parallel=args.parallel,
        )
    except RunInterrupted as err:
        print(str(err), file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        executor.shutdown()
    print_notes(summary.problems)
    print(
        f"run {summary.run_dir}: {summary.executed} executed, {summary.resumed_skipped} already done; "
        + ", ".join(f"{k} {v}" for k, v in sorted(summary.statuses.items()))
    )
    analysis = write_reports(summary.run_dir, args.formats, verify=True)
    try:
        write_junit(analysis, args.junit)
    except HarnessError as err:  # checked before the cells ran; should it fail now, the gate's code stands
        print(f"error: junit not written: {err}", file=sys.stderr)
        print_notes(analysis.problems)
        return print_gates(analysis) or EXIT_ERROR
    print_notes(analysis.problems)
    return print_gates(analysis)


def _executor(args: argparse.Namespace) -> Executor:
    """The executor ``--executor`` names (harness.execution.executors), built with its options; a
    Ray one says how it reached its cluster."""
    from harness.execution.executors import make_executor

    executor = make_executor(args.executor, address=args.address)
    if args.executor == "ray":
        ray = cast("RayExecutor", executor)  # what the registry's "ray" entry builds
        how = "started a local Ray instance" if ray.started_ray and not args.address else "connected to Ray"
        print(f"{how} in {ray.startup_s:.1f} s; {len(ray.alive_nodes())} node(s)", file=sys.stderr)
    return executor
