"""What several commands do once their arguments are parsed: exit codes, reports, notes, studies.

``run`` and ``report`` write the same reports and print the same notes and gate lines; the
validator and replay studies apply the user's options and refuse a setting alike. Exit codes:
0 ok, 1 a failed gate or check (or a rejection), 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from harness.analysis.model import Analysis

EXIT_OK, EXIT_FAIL, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
MAX_NOTES = 30


def write_reports(run_dir: Path, formats: list[str], verify: bool = False) -> Analysis:
    """Analyse, write the reports, and print their paths and one verdict line per config."""
    from harness.analysis.run import analyze_run
    from harness.report.write import write_reports as write

    analysis = analyze_run(run_dir, verify_artifacts=verify)
    for path in write(analysis, run_dir, formats):
        print(f"report {path}")
    for line in analysis.summary_lines():
        print(line)
    return analysis


def write_junit(analysis: Analysis, path: str | None) -> None:
    """``--junit FILE``: the verdicts as JUnit XML (imported only when asked for)."""
    if path is None:
        return
    from harness.analysis.judgement import dimension_verdicts
    from harness.report.junit import render_run
    from harness.report.junit import write_junit as write

    print(f"junit {write(Path(path), render_run(analysis, dimension_verdicts(analysis)))}")


def check_junit_target(path: str | None, runs: Sequence[str | Path] = ()) -> None:
    """A ``--junit`` target is refused before anything runs when it cannot be written (a special
    file, a folder that is missing or not writable: probed by creating a file there, which holds
    for root and read-only file systems too), when it is empty, or when it lies inside (or is)
    a run directory or bundle the command reads or writes: XML over ``results.jsonl`` or
    ``manifest.json`` loses the run's records."""
    if path is None:
        return
    from harness.store.safe_output import UnsafeOutput, check_output_target

    if not path.strip():
        raise UnsafeOutput("argument --junit: an empty path; give the XML file to write")
    try:
        target = check_output_target(Path(path)).resolve()
    except UnsafeOutput as err:
        raise UnsafeOutput(f"argument --junit: {err}") from None
    for run in runs:
        where = Path(run).resolve()
        if target == where or where in target.parents:
            raise UnsafeOutput(
                f"argument --junit: {path} is inside {run}, which this command reads or writes; give a path outside it"
            )
    folder = next(f for f in target.parents if f.exists())  # atomic writes create the missing folders
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".junit-probe-"):
            pass
    except OSError as err:
        raise UnsafeOutput(f"argument --junit: {path}: cannot write in {folder} ({err.strerror or err})") from None


def print_notes(problems: list[str]) -> None:
    for problem in problems[:MAX_NOTES]:
        print(f"note: {problem}", file=sys.stderr)


def print_gates(analysis: Analysis) -> int:
    failed = [g for g in analysis.gates if not g.passed]
    for g in failed:
        print(f"GATE FAILED {g.config_id}: {g.reason}", file=sys.stderr)
    return EXIT_FAIL if failed else EXIT_OK
