"""``harness locate RUN --pair A B``: the first module whose output differs between two cells."""

from __future__ import annotations

import argparse
import json
import sys

from harness.cli.arguments import add_executor
from harness.cli.common import EXIT_OK

NAME = "locate"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(
        NAME, help="re-run two cells of a run with module hooks and name the first module whose output differs"
    )
    s.add_argument("run", help="run directory")
    s.add_argument("--pair", nargs=2, metavar=("CELL_A", "CELL_B"), required=True, help="two cell ids of the run")
    add_executor(s, help="where each side is re-run: a local worker process (default) or a Ray cluster")
    s.add_argument("--json", action="store_true", help="print the location as JSON")
    return s


def run(args: argparse.Namespace) -> int:
    from harness.execution.executors import make_executor
    from harness.workflows.locate import locate_run_pair

    executor = make_executor(args.executor, address=args.address)
    try:
        result = locate_run_pair(args.run, args.pair[0], args.pair[1], executor=executor)
    finally:
        executor.shutdown()
    if args.json:
        sys.stdout.write(json.dumps(result.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    else:
        print(result.sentence)
        if result.explanation:  # the first divergent step, explained from both sides' distributions
            print(f"first divergent step: {result.explanation['sentence']}")
    return EXIT_OK
