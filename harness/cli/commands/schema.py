"""``harness schema [KIND]``: print a task kind's JSON Schema, or write every schema file (``--write DIR``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.cli.arguments import kind_names
from harness.cli.common import EXIT_OK

NAME = "schema"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="print the JSON Schema of a task kind")
    s.add_argument("kind", nargs="?", default="audio", choices=kind_names())
    s.add_argument("--write", metavar="DIR", help="write every schema file into DIR")
    return s


def run(args: argparse.Namespace) -> int:
    from harness.spec.schemas import schema_text, write_schemas

    if args.write:
        for path in write_schemas(Path(args.write)):
            print(path)
        return EXIT_OK
    sys.stdout.write(schema_text(args.kind))
    return EXIT_OK
