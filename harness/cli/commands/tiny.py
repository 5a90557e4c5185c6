"""``harness tiny [NAME...]``: build the tiny seeded models and print their weight hashes."""

from __future__ import annotations

import argparse

from harness.cli.common import EXIT_OK

NAME = "tiny"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="build the tiny models and print their weight hashes")
    s.add_argument("names", nargs="*")
    return s


def run(args: argparse.Namespace) -> int:
    from harness.models.tiny import TINY_NAMES, tiny_dir, tiny_info

    for name in args.names or TINY_NAMES:
        info = tiny_info(name)
        size = sum(f.stat().st_size for f in tiny_dir(name).rglob("*") if f.is_file())
        print(f"tiny:{name} {info['weights_sha256']} {size / 1e6:.2f} MB {tiny_dir(name)}")
    return EXIT_OK
