"""The HTML report: one self-contained page (inline CSS, plots as base64 PNG), answer first.

Order: the summary (headline sentence, verdict counts, the validation rule needed, the
findings that matter, the environment in one line), the verdict map (a colour heatmap with
the level also written in each cell, so it prints in black and white), a compact verdict
table, the agreement chart, then one collapsible section per configuration holding its
evidence, quantization, costs and worst-pair plot, then run-wide costs and the rest.
Tables sit in their own scroll boxes and wrap long words, so the page never overflows
sideways (checked at 1280 and 400 px in headless Chromium); light and dark follow
``prefers-color-scheme``. No script: the page is static and works offline.
"""

from __future__ import annotations

import re
from pathlib import Path

from harness.analysis.model import Analysis, ConfigResult
from harness.report import plots
from harness.report.heatmap import verdict_map
from harness.report.plots import e, note
from harness.report.run import (
    TOP_FINDINGS,
    Table,
    agreement_table,
    class_table,
    config_cost_facts,
    config_facts,
    cost_table,
    drift_table,
    environment_table,
    evidence_table,
    example_table,
    fmt_mapping,
    gate_counts,
    gate_table,
    has_quantization,
    lint_rows,
    meta_lines,
    mix_line,
    model_table,
    node_config_table,
    node_table,
    quantization_table,
    summary_facts,
    summary_of,
    tiny_table,
    verdict_counts,
    verdict_table,
    warnings_table,
)
from harness.vocabulary import (
    ABBREVIATION,
    DARK_TEXT,
    LEVEL_COLOUR,
    MAP_LEVELS,
    MAP_MEANING,
    VERDICT_SHORT,
    VERDICT_TEXT,
)

MAX_PAIR_PLOTS = 24  # a huge run keeps a readable page; the rest are named in a note

_LEVEL_CSS = "".join(
    f".l-{lv}{{background:{LEVEL_COLOUR[lv]};color:{'#111' if lv in DARK_TEXT else '#fff'}}}" for lv in MAP_LEVELS
)
CSS = (
    """
:root{color-scheme:light dark;--fg:#1d1d1f;--bg:#fff;--muted:#5f6368;--line:#d0d4d9;--head:#f1f3f5;--card:#f8f9fa;
--ok:#2c7bb6;--warn:#b35806;--bad:#c51b1b}
@media (prefers-color-scheme:dark){:root{--fg:#e6e6e6;--bg:#15171a;--muted:#a0a6ad;--line:#3a3f45;--head:#22262b;
--card:#1c1f23;--ok:#6baed6;--warn:#fdb863;--bad:#ff6b6b}}
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1200px;
padding:1em;line-height:1.45;color:var(--fg);background:var(--bg);overflow-wrap:break-word}
h1{font-size:1.5em;margin:.2em 0 .4em}h2{border-bottom:1px solid var(--line);padding-bottom:.2em;margin-top:1.8em}
h3{margin-top:1.2em}a{color:var(--ok)}
.scroll{max-width:100%;overflow-x:auto;margin:.5em 0 1.2em}
table{border-collapse:collapse;font-size:.88em;width:100%;max-width:100%}
th,td{border:1px solid var(--line);padding:.3em .5em;text-align:left;vertical-align:top;overflow-wrap:break-word}
th{background:var(--head)}td.none{color:var(--muted);font-style:italic}
.v-ready{color:var(--ok);font-weight:600}.v-ready_with_tolerance{color:var(--warn);font-weight:600}
.v-not_ready,.v-failed{color:var(--bad);font-weight:600}.v-skipped,.v-untested{color:var(--muted)}
.g-passed{color:var(--ok);font-weight:600}.g-FAILED{color:var(--bad);font-weight:600}
#summary{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.8em 1.1em;margin:1em 0}
#summary .headline{font-size:1.2em;font-weight:600;margin:.2em 0 .6em}
.sev{display:inline-block;font-size:.75em;font-weight:700;text-transform:uppercase;padding:0 .4em;border-radius:3px;
border:1px solid currentColor;margin-right:.4em}
.sev-critical{color:var(--bad)}.sev-warning{color:var(--warn)}.sev-info{color:var(--muted)}
ul.findings{padding-left:1.2em}ul.findings li{margin:.3em 0}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em;font-size:.92em;margin:.4em 0}
dl.facts dt{font-weight:600}dl.facts dd{margin:0}
.short{display:none}td[class^="v-"],td[class^="g-"]{overflow-wrap:normal!important;hyphens:none}
@media (max-width:560px){dl.facts{grid-template-columns:1fr}dl.facts dd{margin:0 0 .3em .8em}
body{padding:.6em}table{font-size:.8em}th,td{padding:.25em .3em;overflow-wrap:anywhere}
table.verdicts td,table.verdicts th{overflow-wrap:break-word}
.long{display:none}.short{display:inline}}
table.heatmap{width:auto;min-width:60%}table.heatmap td.cell{text-align:center;font-size:.85em;white-space:nowrap}
@media (max-width:560px){table.heatmap{width:100%}table.heatmap td,table.heatmap thead th{font-size:.75em;
padding:.25em .15em;overflow-wrap:normal}}
"""
    + _LEVEL_CSS
    + """
.l-untested{background:repeating-linear-gradient(45deg,#d9d9d9 0 6px,#eeeeee 6px 12px)}
ul.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.3em 1em;font-size:.85em}
ul.legend li{display:flex;align-items:center;gap:.35em}
.swatch{display:inline-block;min-width:5.5em;text-align:center;border:1px solid var(--line);font-size:.8em;
padding:0 .3em}
details.config{border:1px solid var(--line);border-radius:6px;margin:.6em 0;padding:.2em .8em;background:var(--card)}
details.config>summary{cursor:pointer;padding:.4em 0;font-weight:600}
details.config[open]>summary{border-bottom:1px solid var(--line);margin-bottom:.5em}
.badge{display:inline-block;font-size:.78em;padding:.05em .5em;border-radius:10px;border:1px solid currentColor;
margin-right:.5em;font-weight:600}
figure{margin:.6em 0 1em;max-width:100%}figcaption{font-size:.85em;color:var(--muted)}
img.plot{max-width:100%;height:auto;border:1px solid var(--line);background:#fff}
.note{color:var(--muted);font-style:italic}
.plots{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,520px),1fr));gap:0 1.2em}
@media print{details.config{break-inside:avoid}.scroll{overflow:visible}}
"""
)


def _wbr(text: str) -> str:
    """Escaped, with break opportunities after '/' and '_' so config ids wrap at their axes
    and rule names (token_equality) at their words, never mid-word."""
    return re.sub(r"([/_])", r"\1<wbr>", e(text))


def table_html(
    table: Table, cls: str, cell_class: dict[int, str] | None = None, labels: dict[int, dict[str, str]] | None = None
) -> str:
    """<table class=cls> in its own scroll box; ``cell_class`` maps a column index to a CSS
    class prefix (value appended); ``labels`` maps a column's values to what is shown."""
    head, rows = table
    out = [
        f'<div class="scroll"><table class="{cls}"><thead><tr>'
        + "".join(f"<th>{e(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
    ]
    if not rows:
        out.append(f'<tr><td class="none" colspan="{len(head)}">none</td></tr>')
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            prefix = (cell_class or {}).get(i)
            attr = f' class="{prefix}{e(value)}"' if prefix else ""
            shown = (labels or {}).get(i, {}).get(value, value)
            cells.append(f"<td{attr}>{_wbr(shown)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table></div>"


def _facts(pairs: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{e(k)}</dt><dd>{_wbr(v)}</dd>" for k, v in pairs) + "</dl>"


def _list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{_wbr(i)}</li>" for i in items) + "</ul>" if items else note("None.")


def _anchor(index: int) -> str:
    return f"cfg-{index}"


def _findings(a: Analysis, limit: int | None = None) -> str:
    found = summary_of(a).findings
    found = found if limit is None else found[:limit]
    if not found:
        return note("No findings: nothing diverged, failed or needs a looser rule.")
    return (
        '<ul class="findings">'
        + "".join(f'<li><span class="sev sev-{f.severity}">{e(f.severity)}</span>{_wbr(f.text)}</li>' for f in found)
        + "</ul>"
    )


def summary_html(a: Analysis) -> str:
    s = summary_of(a)
    more = len(s.findings) - TOP_FINDINGS
    link = f'<p><a href="#findings">All {len(s.findings)} findings</a></p>' if more > 0 else ""
    return (
        f'<section id="summary"><h2 style="margin-top:0;border:0">Summary</h2>'
        f'<p class="headline">{_wbr(s.headline)}</p>{_facts(summary_facts(a))}'
        f"<h3>Findings that matter</h3>{_findings(a, TOP_FINDINGS)}{link}</section>"
    )


def _both(text: str) -> str:
    """Full text, and an abbreviation shown instead on phone-width screens."""
    short = ABBREVIATION.get(text, text if len(text) <= 5 else text[:4] + ".")
    if short == text:
        return e(text)
    return f'<span class="long">{e(text)}</span><span class="short" aria-hidden="true">{e(short)}</span>'


def heatmap_html(a: Analysis) -> str:
    columns, rows = verdict_map(a)
    head = (
        "<tr><th>Configuration</th><th>Verdict</th>"
        + "".join(f'<th title="{e(d)}">{_both(d)}</th>' for d in columns)
        + "</tr>"
    )
    body = []
    for i, (c, cells) in enumerate(rows):
        tds = "".join(
            f'<td class="cell l-{cell.level}" data-config="{e(c.config_id)}" data-dim="{e(cell.dimension)}" '
            f'title="{e(cell.title)}">{_both(cell.label)}</td>'
            for cell in cells
        )
        body.append(
            f'<tr><th scope="row"><a href="#{_anchor(i)}">{_wbr(c.config_id)}</a></th>'
            f'<td class="v-{e(c.verdict)}">{_both(VERDICT_SHORT.get(c.verdict, c.verdict))}</td>{tds}</tr>'
        )
    legend = "".join(
        f'<li><span class="swatch l-{lv}">{_both(lv)}</span>{e(MAP_MEANING[lv])}</li>' for lv in MAP_LEVELS
    )
    return (
        f'<div class="scroll"><table class="heatmap"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'
        f'</div><ul class="legend">{legend}</ul><p class="note">Each cell: the worst comparison level seen for '
        "that dimension (hover for pair counts). seed: different seeds should give different outputs "
        "(sensitive is good, no effect is bad). dtype: drift from the float32 reference.</p>"
    )


def config_html(a: Analysis, c: ConfigResult, index: int, run_dir: Path | None, plot: bool) -> str:
    rule = summary_of(a).rule_by_config.get(c.config_id) or "no rule"
    open_attr = " open" if c.verdict in ("not_ready", "failed") else ""
    parts = [
        f'<details class="config" id="{_anchor(index)}" data-config="{e(c.config_id)}"{open_attr}>'
        f'<summary><span class="badge v-{e(c.verdict)}">{e(VERDICT_SHORT.get(c.verdict, c.verdict))}</span>'
        f'{_wbr(c.config_id)} <span class="note">({e(rule)})</span></summary>',
        _facts(config_facts(c)),
        table_html(evidence_table(c), "evidence"),
    ]
    if has_quantization(c):
        parts.append(table_html(quantization_table(c), "quantization"))
    parts += ["<h4>Costs</h4>", _facts(config_cost_facts(c))]
    if c.failures:
        parts += ["<p>Failures:</p>", _list(c.failures)]
    pair = plots.worst_pair(a, c)
    if pair is not None:
        parts.append("<h4>Worst pair</h4>")
        parts.append(
            plots.safe(plots.pair_plot, pair, run_dir)
            if plot
            else note(f"Not plotted: only the first {MAX_PAIR_PLOTS} configurations' worst pairs are drawn.")
        )
    elif c.verdict == "ready":
        parts.append(note("Every compared pair is bitwise identical: no difference to plot."))
    return "".join(parts) + "</details>"


def _fleet_html(a: Analysis) -> list[str]:
    if not a.fleet:
        return []
    return [
        '<section id="nodes"><h2>Nodes</h2>',
        f"<p>Reference node: <code>{e(a.fleet.reference_node)}</code>. {e(mix_line(a))}</p>",
        table_html(node_table(a), "nodes"),
        "<h3>Agreement with the reference node</h3>",
        table_html(node_config_table(a), "node-levels"),
        "<h3>Verdicts per environment class</h3>",
        table_html(class_table(a), "node-classes"),
        "</section>",
    ]


def render_html(a: Analysis, run_dir: Path | None = None) -> str:
    run_dir = Path(run_dir) if run_dir is not None else None
    present = [v for v in VERDICT_TEXT if any(c.verdict == v for c in a.configs)]
    plotted = 0
    config_parts = []
    for i, c in enumerate(a.configs):
        has_pair = plots.worst_pair(a, c) is not None
        config_parts.append(config_html(a, c, i, run_dir, plot=plotted < MAX_PAIR_PLOTS))
        plotted += has_pair
    body = [
        f"<h1>Consensus-readiness report: {e(a.matrix)}</h1>",
        f'<p class="note">{e(a.description)}</p>' if a.description else "",
        summary_html(a),
        '<section id="map"><h2>Verdict map</h2>',
        heatmap_html(a),
        "</section>",
        '<section id="verdicts"><h2>Verdicts</h2>',
        f"<p>Configurations: {len(a.configs)} ({e(verdict_counts(a))}).</p>",
        table_html(verdict_table(a), "verdicts", {1: "v-"}, labels={1: VERDICT_SHORT}),
        _list([f"{v}: {VERDICT_TEXT[v]}" for v in present]) if present else "",
        "</section>",
        '<section id="agreement"><h2>Agreement</h2>',
        plots.safe(plots.agreement_chart, a),
        "<details><summary>As a table</summary>",
        table_html(agreement_table(a), "agreement"),
        "</details>",
        "</section>",
        '<section id="configs"><h2>Evidence per configuration</h2>',
        f"<p>Thresholds: {e(fmt_mapping(a.thresholds))}</p>",
        *config_parts,
        "</section>",
        '<section id="findings"><h2>Findings</h2>',
        _findings(a),
        "</section>",
        *_fleet_html(a),
        '<section id="costs"><h2>Costs</h2>',
        note(a.parallel_note) if a.parallel_note else "",
        '<div class="plots">',
        plots.safe(plots.latency_plot, a),
        plots.safe(plots.memory_plot, a),
        plots.safe(plots.speed_plot, a),
        "</div>",
        table_html(cost_table(a), "costs"),
        "</section>",
        '<section id="examples"><h2>Worst pairs</h2>',
        table_html(example_table(a), "examples"),
        plots.safe(plots.divergence_plot, a),
        "</section>",
        '<section id="drift"><h2>Dtype drift</h2>',
        table_html(drift_table(a), "drift"),
        "</section>",
        '<section id="lint"><h2>Lint warnings</h2>',
        _list([f"{w} ({', '.join(ids)})" for w, ids in lint_rows(a)]),
        "</section>",
        '<section id="warnings"><h2>Library warnings</h2>',
        table_html(warnings_table(a), "warnings"),
        "</section>",
        '<section id="models"><h2>Model comparison</h2>',
        table_html(model_table(a), "models"),
        "</section>",
        '<section id="gates"><h2>Gates</h2>',
        f"<p>Rules: {e(', '.join(a.gate_rules) or 'none')}. Result: {e(gate_counts(a))}.</p>",
        table_html(gate_table(a), "gates", {1: "g-"}),
        "</section>",
        '<section id="problems"><h2>Problems</h2>',
        _list(a.problems),
        "</section>",
        '<section id="environment"><h2>Environment</h2>',
        _facts(meta_lines(a)),
        table_html(environment_table(a), "environment"),
        "<h3>Tiny model weight hashes</h3>",
        table_html(tiny_table(a), "tiny-models"),
        "</section>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Consensus-readiness report: {e(a.matrix)} ({e(a.run_id)})</title>"
        f"<style>{CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n"
    )
