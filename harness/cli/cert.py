"""The certification commands as one group: bundle, certify, calibrate, compare, bench.

``register(subparsers)`` adds the five (the same modules ``harness.cli.main`` lists) to a parser
of one's own; ``main(argv)`` is that parser alone (``python -m harness.cli.cert``), printing a
HarnessError (BundleError, CertifyError, CrossRunError, ...) as one ``error: ...`` line, exit code 2.
"""

from __future__ import annotations

import argparse
import sys

from harness.cli.arguments import add_commands
from harness.cli.commands import bench, bundle, calibrate, certify, compare
from harness.cli.common import EXIT_ERROR
from harness.errors import HarnessError

COMMANDS = (bundle, certify, calibrate, compare, bench)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add_commands(sub, COMMANDS)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="harness")
    sub = p.add_subparsers(dest="command", required=True)
    register(sub)
    args = p.parse_args(argv)
    try:
        code: int = args.func(args)  # a command's run (harness.cli.arguments.Command)
        return code
    except HarnessError as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
