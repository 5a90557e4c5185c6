"""Render a cross-run comparison (harness.analysis.crossrun.CrossRunResult) as Markdown
(``harness compare``): one place for Markdown (report/), rendering decides nothing."""

from __future__ import annotations

from harness.analysis.crossrun import CrossRunResult
from harness.report.certificate import fmt_metrics, what_differed
from harness.report.run import fmt, md_table


def render_crossrun(result: CrossRunResult) -> str:
    """Markdown summary of a harness.analysis.crossrun.CrossRunResult (rendering decides nothing)."""
    a, b = result.a, result.b
    lines = [
        f"# Output comparison: {b.run_id} ({b.label}) against {a.run_id} ({a.label})",
        "",
        f"{a.label}: {a.source}" + (f" (bundle sha256 {a.bundle_sha256})" if a.bundle_sha256 else ""),
        f"{b.label}: {b.source}" + (f" (bundle sha256 {b.bundle_sha256})" if b.bundle_sha256 else ""),
        f"Matched by `{result.match}`; {len(result.matches)} pair(s); worst level {fmt(result.worst)}.",
        "Environment fields that differ: " + (", ".join(result.environment_differs) or "none"),
        "",
    ]
    rows = []
    for c in result.configs:
        issues = len(c.unmatched_a) + len(c.failed_a) + len(c.failed_b) + len(c.skipped_b) + len(c.errors)
        rows.append(
            [
                c.config_id,
                str(c.matched),
                ", ".join(f"{k} {v}" for k, v in c.levels.items()) or "-",
                fmt(c.worst),
                fmt(c.first_divergence[0] if c.first_divergence else None),
                str(len(c.skipped_a)),
                str(issues),
            ]
        )
    lines += md_table(
        (["configuration", "pairs", "levels", "worst", "first divergence", "skipped in A", "not compared"], rows)
    )
    worst = [m for m in result.matches if m.level and m.level != "bitwise"]
    if worst:
        lines += ["## Pairs that are not bitwise", ""]
        lines += md_table(
            (
                ["A cell", "B cell", "level", "first divergence", "metrics"],
                [
                    [m.cell_a, m.cell_b, m.level or "-", fmt(m.first_divergence), fmt_metrics(m.metrics)]
                    for m in worst[:50]
                ],
            )
        )
    lines += what_differed(result.groups)
    notes = [
        f"{what}: {x}"
        for c in result.configs
        for what, items in (
            (f"no partner in {b.label}", c.unmatched_a),
            (f"failed in {a.label}", c.failed_a),
            (f"failed in {b.label}", c.failed_b),
            (f"skipped in {b.label}", c.skipped_b),
            ("not comparable", c.errors),
        )
        for x in items
    ]
    notes += [f"only in {b.label}: {x}" for x in result.unmatched_b] + [f"problem: {p}" for p in result.problems]
    if not result.matches and result.match == "spec" and result.unmatched_b:
        notes.insert(
            0,
            "no spec hash in common: runs made with other thread counts, batch sizes or dtypes match "
            "with --match ignore:threads (or ignore:batch_size, ignore:dtype)",
        )
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes[:100]]
        if len(notes) > 100:
            lines.append(f"- ... and {len(notes) - 100} more")
    return "\n".join(lines).rstrip() + "\n"
