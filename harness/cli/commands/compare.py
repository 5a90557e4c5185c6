"""``harness compare A B``: two runs or bundles cell by cell, outputs then costs; exit 1 when a
``--check`` on the costs fails."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness.cli.arguments import add_cost_options, add_junit, add_trusted_keys, match_mode
from harness.cli.common import EXIT_FAIL, EXIT_OK
from harness.errors import StoreError

if TYPE_CHECKING:
    from harness.analysis.bench import CostRow
    from harness.analysis.crossrun import CrossRunResult
    from harness.store.bundle import OpenedRun
    from harness.store.run import RunStore

NAME = "compare"


def setup_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    s = sub.add_parser(NAME, help="compare two runs or bundles cell by cell (outputs, then costs)")
    s.add_argument("a", help="reference run directory or bundle")
    s.add_argument("b", help="run directory or bundle to compare with it")
    s.add_argument(
        "--match",
        type=match_mode,
        default="spec",
        help="spec (equal spec hashes, default) or ignore:AXIS (threads, batch_size, dtype, load, isa; "
        "several: ignore:threads,isa)",
    )
    add_cost_options(s)
    s.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    add_trusted_keys(s, "bundles must be signed by one of these keys")
    add_junit(
        s,
        "also write JUnit XML: one testcase per configuration of A (fails "
        "when B does not reproduce it), and per --check on its costs",
    )
    return s


def run(args: argparse.Namespace) -> int:
    from harness.analysis.crossrun import compare_runs
    from harness.cli.common import check_junit_target
    from harness.cli.trust import trusted_from
    from harness.report.crossrun import render_crossrun
    from harness.store.bundle import TrustError, open_run_or_bundle
    from harness.store.run import atomic_write_json

    check_junit_target(args.junit, [args.a, args.b])
    trusted = trusted_from(args)
    with contextlib.ExitStack() as stack:
        try:  # both sides before anything is compared: trust asked for and not given is exit 1
            run_a = stack.enter_context(open_run_or_bundle(args.a, trusted))
            run_b = stack.enter_context(open_run_or_bundle(args.b, trusted))
        except TrustError as err:
            print(f"NOT VERIFIED {err}")
            return EXIT_FAIL
        for side in (run_a, run_b):
            if side.is_bundle:
                print(f"{side.source}: {side.signed_by}")
        result = compare_runs(run_a, run_b, match=args.match)
        sys.stdout.write(render_crossrun(result))
        if args.json:
            atomic_write_json(Path(args.json), result.model_dump(mode="json"))
            print(f"wrote {args.json}")
        rows: list[CostRow] = []
        code = _compare_costs(run_a.store, run_b.store, args.check or [], args.min_effect, rows)
        if args.junit:
            _compare_junit(args, run_a, result, rows)
        return code


def _compare_junit(args: argparse.Namespace, run_a: OpenedRun, result: CrossRunResult, rows: list[CostRow]) -> None:
    """Each configuration of A judged as certification judges B against it, then the costs."""
    from harness.report.junit import render_compare, write_junit
    from harness.workflows.certify import judge

    verdicts: dict[str, tuple[str, str]] = {}
    for out in result.configs:
        verdict, reason, _ = judge(out, result)  # the validator each configuration resolved
        verdicts[out.config_id] = (verdict, reason)
    print(f"junit {write_junit(Path(args.junit), render_compare(result, verdicts, rows, args.check or []))}")


def _compare_costs(
    store_a: RunStore,
    store_b: RunStore,
    checks: list[str],
    min_effect: float = 0.0,
    rows_out: list[CostRow] | None = None,
) -> int:
    from harness.analysis.costs import compare_run_costs, has_regressions
    from harness.report.costs import render_cost_table

    try:
        rows = compare_run_costs(store_a, store_b, checks, min_effect=min_effect)
    except ValueError as err:
        raise StoreError(f"--check: {str(err).splitlines()[0]}") from None
    if rows_out is not None:
        rows_out.extend(rows)
    print("\n# Costs\n")
    sys.stdout.write(render_cost_table(rows))
    return EXIT_FAIL if has_regressions(rows) and checks else EXIT_OK
