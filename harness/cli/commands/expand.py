"""``harness expand MATRIX``: list a matrix's cells (a table, or ``--json`` lines) without running them."""

from __future__ import annotations

import argparse
import json

from harness.cli.arguments import add_max_cells
from harness.cli.common import EXIT_OK

NAME = "expand"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="list the cells of a matrix")
    s.add_argument("matrix")
    s.add_argument("--json", action="store_true")
    s.add_argument("--detect", action="store_true", help="expand device=all with the devices found here")
    add_max_cells(s)
    return s


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from harness.spec.matrix import available_devices, expand, load_matrix

    matrix = load_matrix(args.matrix)
    cells = expand(
        matrix,
        available_devices() if args.detect else ["cpu"],
        **({"max_cells": args.max_cells} if args.max_cells else {}),
    )
    if args.json:
        for c in cells:
            print(
                json.dumps(
                    {
                        "cell_id": c.cell_id,
                        "spec_hash": c.spec_hash,
                        "config_id": c.config_id,
                        "skip_reason": c.skip_reason,
                    }
                )
            )
        return EXIT_OK
    table = Table(title=f"{matrix.spec.name}: {len(cells)} cells")
    for col in ("cell id", "spec hash", "skip reason"):
        table.add_column(col)
    for c in cells:
        table.add_row(c.cell_id, c.spec_hash, c.skip_reason or "")
    Console().print(table)
    return EXIT_OK
