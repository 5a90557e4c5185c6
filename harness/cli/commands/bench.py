"""``harness bench BASELINE CURRENT``: two pytest-benchmark files, significant changes only; exit 1
when a ``--check`` fails."""

from __future__ import annotations

import argparse
import sys

from harness.cli.arguments import add_cost_options
from harness.cli.common import EXIT_FAIL, EXIT_OK

NAME = "bench"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="compare two pytest-benchmark files (nox -s bench), significant changes only")
    s.add_argument("baseline", help="pytest-benchmark JSON (saved with --benchmark-save-data for per-round samples)")
    s.add_argument("current", help="pytest-benchmark JSON to compare with it")
    add_cost_options(s)
    return s


def run(args: argparse.Namespace) -> int:
    from harness.analysis.costs import compare_benchmark_files, has_regressions
    from harness.report.costs import render_cost_table

    checks = args.check or []
    rows = compare_benchmark_files(args.baseline, args.current, checks, min_effect=args.min_effect)
    print(f"# Benchmarks: {args.current} against {args.baseline}\n")
    sys.stdout.write(render_cost_table(rows))
    untested = [r.key for r in rows if r.change is not None and r.change.verdict == "no samples"]
    if untested:
        print(
            f"note: {len(untested)} benchmark(s) without per-round samples on one side (saved without "
            f"--benchmark-save-data): judged by their summary numbers only",
            file=sys.stderr,
        )
    return EXIT_FAIL if checks and has_regressions(rows) else EXIT_OK
