"""Render a cost comparison (harness.analysis.costs rows) as Markdown: one line per
configuration, then the legend of the significance test and a one-line summary.

Why here: every renderer lives in report/ (the cost rows are computed in analysis/, which
decides the marks and the failed checks; this only writes them down).
"""

from __future__ import annotations

from collections.abc import Sequence

from harness.analysis.bench import CostRow, fmt_seconds
from harness.analysis.costs import MARK_LEGEND, SIGNIFICANCE_NOTE
from harness.report.run import md_table


def render_cost_table(rows: Sequence[CostRow]) -> str:
    """A Markdown table, one line per row: mark, configuration, medians, ratio, the tested
    change (or "not significant") and why (failed checks, or the reason a row is not
    comparable), then a one-line summary."""
    head = ["Mark", "Configuration", "Baseline median", "Current median", "Ratio", "Change (95% CI)", "Notes"]
    table = []
    for row in rows:
        notes = [*row.messages, *([row.note] if row.note else [])]
        if row.mark == "!" and not notes:
            notes.append("newly failing")
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        mark = row.mark.strip()
        change = "-" if row.change is None else row.change.text
        table.append(
            [
                mark,
                row.key,
                fmt_seconds(row.baseline_median),
                fmt_seconds(row.current_median),
                ratio,
                change,
                "; ".join(notes) or "-",
            ]
        )
    lines = md_table((head, table), empty="_No configurations._")[:-1]
    counts = {m: sum(1 for r in rows if r.mark == m) for m in MARK_LEGEND}
    failed_checks = sum(1 for r in rows if r.regressed)
    tested = [r.change for r in rows if r.change is not None and r.change.verdict != "no samples"]
    quiet = sum(1 for c in tested if not c.changed)
    summary = ", ".join(f"{counts[m]} {m} ({MARK_LEGEND[m].split(' (')[0]})" for m in MARK_LEGEND)
    lines += [
        "",
        *([SIGNIFICANCE_NOTE + ".", ""] if tested else []),
        f"{len(rows)} configurations: {summary}; {failed_checks} with failed checks; "
        f"{len(tested)} tested, {quiet} not significant.",
    ]
    return "\n".join(lines) + "\n"
