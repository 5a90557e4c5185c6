"""The distinct library warnings of a run, with counts: from the worker logs and the records.

Two sources, because warnings reach us two ways: ``logging`` lines in ``worker-*.log``
(written by ``harness.execution.quiet_logs``: first occurrence, then ``(repeated N more
times)`` lines, which are summed here) and Python warnings caught per execution in each
record's ``warnings`` (counted as the number of executions that raised them). Lines that
are not log records (tracebacks, C libraries printing) are not warnings and are skipped.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.analysis.model import LogWarning
from harness.execution.quiet_logs import LINE
from harness.store.records import Record

MAX_LOG_BYTES = 64 * 2**20  # a runaway log is read only this far


def log_file_warnings(run_dir: Path) -> list[LogWarning]:
    """Distinct ``LEVEL logger: message`` lines of every worker log, summed over repeats."""
    found: dict[tuple[str, str, str], LogWarning] = {}
    for path in sorted(Path(run_dir).glob("worker-*.log")):
        try:
            with path.open("rb") as fh:
                text = fh.read(MAX_LOG_BYTES).decode("utf-8", "replace")
        except OSError:
            continue
        for line in text.splitlines():
            m = LINE.match(line)
            if not m or m["level"] in ("DEBUG", "INFO"):
                continue
            key = (m["level"], m["logger"], m["message"])
            w = found.setdefault(key, LogWarning(source=m["logger"], level=m["level"], message=m["message"]))
            w.count += int(m["repeats"]) if m["repeats"] else 1
            if path.name not in w.where:
                w.where.append(path.name)
    return list(found.values())


def record_warnings(records: Iterable[Record]) -> list[LogWarning]:
    """Python warnings caught during executions: one entry per text, counted per execution."""
    found: dict[str, LogWarning] = {}
    for r in records:
        for text in r.warnings or []:
            w = found.setdefault(text, LogWarning(source="python warnings", level="WARNING", message=text))
            w.count += 1
            if r.config_id not in w.where:
                w.where.append(r.config_id)
    return list(found.values())


def run_warnings(run_dir: Path, records: Iterable[Record]) -> list[LogWarning]:
    """Both sources, most frequent first (ties by message, so the order is stable)."""
    both = log_file_warnings(run_dir) + record_warnings(records)
    return sorted(both, key=lambda w: (-w.count, w.source, w.message))
