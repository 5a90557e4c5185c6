"""``harness report RUN``: (re)write a run's reports from its records; ``--gate`` exits 1 when a gate fails."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.arguments import add_formats, add_junit
from harness.cli.common import (
    EXIT_OK,
    MAX_NOTES,
    check_junit_target,
    print_gates,
    print_notes,
    write_junit,
    write_reports,
)

NAME = "report"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="(re)write a run's reports")
    s.add_argument("run")
    add_formats(s)
    s.add_argument("--gate", action="store_true", help="exit 1 when a gate fails")
    s.add_argument("--no-verify", action="store_true", help="do not re-hash every artifact against its record")
    add_junit(s)
    return s


def run(args: argparse.Namespace) -> int:
    check_junit_target(args.junit, [args.run])  # before the reports are written
    analysis = write_reports(Path(args.run), args.formats, verify=not args.no_verify)
    write_junit(analysis, args.junit)
    print_notes(analysis.problems)  # torn lines, broken evidence: said here, not only in the report
    if len(analysis.problems) > MAX_NOTES:
        print(f"note: ... and {len(analysis.problems) - MAX_NOTES} more (see the report)", file=sys.stderr)
    return print_gates(analysis) if args.gate else EXIT_OK
