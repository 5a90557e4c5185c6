"""``harness show RUN``: a run's verdicts, verdict map and top findings in the terminal."""

from __future__ import annotations

import argparse

from harness.cli.arguments import bounded
from harness.cli.common import EXIT_OK

NAME = "show"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="print a run's verdicts, verdict map and top findings in the terminal")
    s.add_argument("run", help="run directory (its report.json, else its records) or a report.json")
    s.add_argument("--width", type=bounded("width", 20, 10_000), help="terminal width in columns (default: detected)")
    return s


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from harness.analysis.saved import load_analysis
    from harness.report.terminal import show

    show(load_analysis(args.run), Console(width=args.width) if args.width else None)
    return EXIT_OK
