"""The run summary for a terminal (``harness show RUN``): headline, verdict map in colour,
verdicts and the top findings, drawn with rich so it works over SSH and degrades to plain
text when piped (rich drops colour; every map cell still says its level in words).
Renders the same Analysis fields as the HTML and Markdown reports and decides nothing.
"""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from harness.analysis.model import Analysis
from harness.report.heatmap import verdict_map
from harness.report.run import summary_facts, summary_of
from harness.vocabulary import DARK_TEXT, LEVEL_COLOUR, MAP_LEVELS, VERDICT_SHORT, VERDICT_STYLE

SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}
TOP_FINDINGS = 5
TOP_WARNINGS = 3


def _cell_style(level: str) -> str:
    return f"{'black' if level in DARK_TEXT else 'white'} on {LEVEL_COLOUR[level]}"


def summary_panel(a: Analysis) -> Panel:
    s = summary_of(a)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for k, v in summary_facts(a):
        facts.add_row(k, v)
    return Panel(
        Group(Text(s.headline, style="bold"), Text(""), facts), title=f"{a.matrix} ({a.run_id})", title_align="left"
    )


def map_table(a: Analysis) -> Table:
    columns, rows = verdict_map(a)
    t = Table(title="Verdict map (worst level per dimension)", title_justify="left", show_lines=False)
    t.add_column("configuration", overflow="fold")
    t.add_column("verdict")
    for d in columns:
        t.add_column(d, justify="center")
    for c, cells in rows:
        t.add_row(
            c.config_id,
            Text(VERDICT_SHORT.get(c.verdict, c.verdict), style=VERDICT_STYLE.get(c.verdict, "")),
            *(Text(cell.label, style=_cell_style(cell.level)) for cell in cells),
        )
    return t


def legend() -> Text:
    text = Text("levels: ")
    for lv in MAP_LEVELS:
        text.append(f" {lv} ", style=_cell_style(lv))
        text.append(" ")
    return text


def verdicts_table(a: Analysis) -> Table:
    s = summary_of(a)
    t = Table(title="Verdicts", title_justify="left")
    t.add_column("configuration", overflow="fold")
    t.add_column("verdict")
    t.add_column("rule needed")
    t.add_column("P(3/3) exact hash", justify="right")
    t.add_column("reason", overflow="fold", ratio=1)
    for c in a.configs:
        p3 = c.agreement.get("bitwise", {}).get("p3of3")
        t.add_row(
            c.config_id,
            Text(VERDICT_SHORT.get(c.verdict, c.verdict), style=VERDICT_STYLE.get(c.verdict, "")),
            s.rule_by_config.get(c.config_id) or "-",
            "-" if p3 is None else f"{p3:.2f}",
            c.reason,
        )
    return t


def findings_text(a: Analysis) -> Text:
    found = summary_of(a).findings
    text = Text("Top findings\n", style="bold")
    if not found:
        return text.append("none: nothing diverged, failed or needs a looser rule\n", style="dim")
    for f in found[:TOP_FINDINGS]:
        text.append(f"{f.severity:>8} ", style=SEVERITY_STYLE[f.severity]).append(f.text + "\n")
    if len(found) > TOP_FINDINGS:
        text.append(f"... and {len(found) - TOP_FINDINGS} more in the report\n", style="dim")
    for w in a.warnings[:TOP_WARNINGS]:
        text.append(f"{'warning':>8} ", style="dim").append(f"{w.count}x {w.source}: {w.message[:200]}\n")
    return text


def show(a: Analysis, console: Console | None = None) -> None:
    console = console or Console()
    console.print(summary_panel(a))
    console.print(map_table(a))
    console.print(legend())
    console.print()
    console.print(verdicts_table(a))
    console.print(findings_text(a))
