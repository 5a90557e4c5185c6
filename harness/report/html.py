"""The HTML report: one self-contained page (inline CSS, plots as base64 PNG data URIs).

Same tables as the Markdown report (built by harness.report.run) plus plots drawn with
matplotlib's object API (Figure + Agg, no pyplot, so no global backend is changed).
matplotlib is optional: without it every plot becomes a short note. A plot that cannot be
drawn (an artifact missing or unreadable) becomes a note too; rendering never fails on one.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.model import VERDICT_TEXT, Analysis, PairResult
from harness.report.run import (Table, class_table, config_facts, cost_table, drift_table, environment_table,
                            evidence_table, example_table, fmt, fmt_mapping, gate_counts, gate_table, lint_rows,
                            meta_lines, mix_line, model_table, node_config_table, node_table, tiny_table,
                            verdict_counts, verdict_table)

MAX_EXAMPLES = 6
NO_MATPLOTLIB = "matplotlib is not installed; plot omitted (pip install matplotlib)."

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.none{color:#777;font-style:italic}
.v-ready{background:#d9f2d9}.v-ready_with_tolerance{background:#fff3c4}.v-not_ready,.v-failed{background:#f8d0d0}
.v-skipped,.v-untested{background:#eee}.g-passed{background:#d9f2d9}.g-FAILED{background:#f8d0d0}
figure{display:inline-block;margin:.5em 1em 1em 0;vertical-align:top}figcaption{font-size:.85em;color:#444}
img.plot{max-width:100%;border:1px solid #ddd}.note{color:#666;font-style:italic}
dl.facts{display:grid;grid-template-columns:max-content auto;gap:.1em 1em;font-size:.9em}dl.facts dt{font-weight:600}
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def table_html(table: Table, cls: str, cell_class: dict[int, str] | None = None) -> str:
    """<table class=cls>; ``cell_class`` maps a column index to a CSS class prefix (value appended)."""
    head, rows = table
    out = [f'<table class="{cls}"><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    if not rows:
        out.append(f'<tr><td class="none" colspan="{len(head)}">none</td></tr>')
    for row in rows:
        cells = []
        for i, value in enumerate(row):
            prefix = (cell_class or {}).get(i)
            attr = f' class="{prefix}{_e(value)}"' if prefix else ""
            cells.append(f"<td{attr}>{_e(value)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    return "".join(out) + "</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except Exception:  # not installed, or a broken install: notes instead of plots
        return None
    return Figure


def _figure_html(fig: Any, alt: str, caption: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<figure><img class="plot" alt="{_e(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


# --- plots -----------------------------------------------------------------------------------------
def _load_pair(pair: PairResult, run_dir: Path | None) -> tuple[dict, dict] | str:
    """Both artifacts' arrays, or a note saying why not."""
    if run_dir is None:
        return "no run directory given, so artifacts were not read"
    if not pair.a_artifact or not pair.b_artifact:
        return "the pair has no stored artifacts"
    from harness.store.run import RunStore

    store = RunStore(run_dir)
    try:
        return store.load_artifact(pair.a_artifact), store.load_artifact(pair.b_artifact)
    except Exception as err:  # StoreError or anything numpy raises: a note, not a crash
        return f"artifact could not be loaded ({err})"


def _mono(w: np.ndarray) -> np.ndarray:
    w = np.asarray(w, dtype=np.float64)
    return w if w.ndim == 1 else w.reshape(w.shape[0], -1)[:, 0]


def _tokens(t: np.ndarray) -> np.ndarray:
    row = np.asarray(t).reshape(-1) if np.asarray(t).ndim < 2 else np.asarray(t)[0]
    valid = np.nonzero(row >= 0)[0]
    return row[: valid[-1] + 1] if valid.size else row[:0]


def _example_plot(Figure: Any, pair: PairResult, arrays: tuple[dict, dict]) -> str:
    xa, xb = arrays
    what = f"{pair.config_id}: {pair.dimension} pair {pair.a} vs {pair.b}"
    caption = f"{what} -- level {pair.level}; first divergence {fmt(pair.first_divergence)} of " \
              f"{fmt(pair.steps_total)} steps; {fmt_mapping(pair.metrics)}"
    fig = Figure(figsize=(8, 4.5))
    top, bottom = fig.subplots(2, 1, sharex=True)
    if "waveform" in xa and "waveform" in xb:
        wa, wb = _mono(xa["waveform"]), _mono(xb["waveform"])
        n = min(len(wa), len(wb))
        top.plot(wa, lw=0.8, label=f"a ({pair.a})")
        top.plot(wb, lw=0.8, ls="--", alpha=0.8, label=f"b ({pair.b})")
        top.set_ylabel("amplitude (ch 0)")
        bottom.plot(wb[:n] - wa[:n], lw=0.8, color="tab:red")
        bottom.set_ylabel("b - a")
        bottom.set_xlabel("sample")
        alt = f"Waveform overlay and difference, {what}"
    elif "token_ids" in xa and "token_ids" in xb:
        ta, tb = _tokens(xa["token_ids"]), _tokens(xb["token_ids"])
        n = min(len(ta), len(tb))
        top.plot(np.arange(len(ta)), ta, "o-", ms=3, lw=1, label=f"a ({pair.a})")
        top.plot(np.arange(len(tb)), tb, "s--", ms=3, lw=1, label=f"b ({pair.b})")
        top.set_ylabel("token id")
        bottom.bar(np.arange(n), (ta[:n] != tb[:n]).astype(int), width=0.8, color="tab:red")
        bottom.set_ylabel("differs")
        bottom.set_yticks([0, 1])
        bottom.set_xlabel("generated token")
        if pair.first_divergence is not None:
            for ax in (top, bottom):
                ax.axvline(pair.first_divergence, color="k", ls=":", lw=1)
            bottom.annotate(f"first divergence @ {pair.first_divergence}", (pair.first_divergence, 0.5),
                            xycoords=("data", "axes fraction"), xytext=(4, 0), textcoords="offset points",
                            fontsize=8, bbox={"fc": "white", "ec": "none", "alpha": 0.8})
        alt = f"Token ids of both outputs with the first divergence marked, {what}"
    else:
        return _note(f"{what}: the artifacts hold neither a waveform nor token_ids; no plot.")
    top.legend(loc="best", fontsize=8)
    top.set_title(what, fontsize=9)
    return _figure_html(fig, alt, caption)


def _divergence_plot(Figure: Any, a: Analysis) -> str:
    from matplotlib.ticker import MaxNLocator

    steps = [s for c in a.configs for d in c.dimensions.values() for s in d.first_divergence]
    if not steps:
        return _note("No first divergence steps were recorded; no histogram.")
    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    ax.hist(steps, bins=max(1, min(30, len(set(steps)))), color="tab:blue", edgecolor="white")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("first divergent step")
    ax.set_ylabel("pairs")
    ax.set_title("First divergence steps, all configurations", fontsize=9)
    return _figure_html(fig, "Histogram of first divergence steps over all configurations",
                        f"First divergence step of {len(steps)} pairs across all configurations and dimensions.")


def _latency_plot(Figure: Any, a: Analysis) -> str:
    data = [(c.config_id, c.cost.latency_samples) for c in a.configs if c.cost.latency_samples]
    if not data:
        return _note("No latency samples were recorded; no latency plot.")
    fig = Figure(figsize=(max(5.0, 1.2 * len(data) + 2), 4))
    ax = fig.subplots()
    ax.boxplot([samples for _, samples in data])
    ax.set_xticks(range(1, len(data) + 1))
    ax.set_xticklabels([cid for cid, _ in data], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("latency (s)")
    values = [x for _, samples in data for x in samples if x > 0]
    if values and max(values) > 20 * min(values):  # very different scales: keep every box readable
        ax.set_yscale("log")
        ax.set_ylabel("latency (s, log scale)")
    ax.set_title("Latency per configuration (load excluded)", fontsize=9)
    return _figure_html(fig, "Box plot of latency per configuration",
                        "Latency samples per configuration (seconds, load excluded).")


def _safe(draw: Any, *args: Any) -> str:
    try:
        return draw(*args)
    except Exception as err:  # a plot must never take the report down with it
        return _note(f"plot could not be drawn ({type(err).__name__}: {err})")


def plots_html(a: Analysis, run_dir: Path | None) -> str:
    Figure = _figure_class()
    out = ["<h3>Worst pair per configuration</h3>"]
    examples = a.examples[:MAX_EXAMPLES]
    if not examples:
        out.append(_note("No example pairs."))
    for pair in examples:
        if Figure is None:
            out.append(_note(f"{pair.config_id}: {NO_MATPLOTLIB}"))
            continue
        arrays = _load_pair(pair, Path(run_dir) if run_dir is not None else None)
        if isinstance(arrays, str):
            out.append(_note(f"{pair.config_id}: {pair.a} vs {pair.b}: {arrays}; no plot."))
        else:
            out.append(_safe(_example_plot, Figure, pair, arrays))
    if len(a.examples) > MAX_EXAMPLES:
        out.append(_note(f"{len(a.examples) - MAX_EXAMPLES} more example pairs not plotted."))
    out.append("<h3>First divergence</h3>")
    out.append(_note(NO_MATPLOTLIB) if Figure is None else _safe(_divergence_plot, Figure, a))
    out.append("<h3>Latency</h3>")
    out.append(_note(NO_MATPLOTLIB) if Figure is None else _safe(_latency_plot, Figure, a))
    return "\n".join(out)


# --- page --------------------------------------------------------------------------------------------
def _facts(pairs: list[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in pairs) + "</dl>"


def _list(items: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{_e(i)}</li>" for i in items) + "</ul>" if items else _note("None.")


def _fleet_html(a: Analysis) -> list[str]:
    if not a.fleet:
        return []
    return ['<section id="nodes"><h2>Nodes</h2>', f"<p>Reference node: <code>{_e(a.fleet.reference_node)}</code>. "
            f"{_e(mix_line(a))}</p>", table_html(node_table(a), "nodes"),
            "<h3>Agreement with the reference node</h3>", table_html(node_config_table(a), "node-levels"),
            "<h3>Verdicts per environment class</h3>", table_html(class_table(a), "node-classes"), "</section>"]


def render_html(a: Analysis, run_dir: Path | None = None) -> str:
    present = [v for v in VERDICT_TEXT if any(c.verdict == v for c in a.configs)]
    body = [f"<h1>Consensus-readiness report: {_e(a.matrix)}</h1>", _facts(meta_lines(a)),
            '<section id="verdicts"><h2>Verdicts</h2>',
            f"<p>Configurations: {len(a.configs)} ({_e(verdict_counts(a))}).</p>",
            table_html(verdict_table(a), "verdicts", {1: "v-"}),
            _list([f"{v}: {VERDICT_TEXT[v]}" for v in present]) if present else "", "</section>",
            '<section id="evidence"><h2>Evidence</h2>', f"<p>Thresholds: {_e(fmt_mapping(a.thresholds))}</p>"]
    for c in a.configs:
        body += [f"<h3>{_e(c.config_id)}</h3>", _facts(config_facts(c)), table_html(evidence_table(c), "evidence")]
        if c.failures:
            body += ["<p>Failures:</p>", _list(c.failures)]
    body += ["<h3>Worst pairs</h3>", table_html(example_table(a), "examples"), "</section>",
             '<section id="drift"><h2>Dtype drift</h2>', table_html(drift_table(a), "drift"), "</section>",
             '<section id="lint"><h2>Lint warnings</h2>',
             _list([f"{w} ({', '.join(ids)})" for w, ids in lint_rows(a)]), "</section>",
             *_fleet_html(a),
             '<section id="costs"><h2>Costs</h2>', _note(a.parallel_note) if a.parallel_note else "",
             table_html(cost_table(a), "costs"), "</section>",
             '<section id="models"><h2>Model comparison</h2>', table_html(model_table(a), "models"), "</section>",
             '<section id="gates"><h2>Gates</h2>',
             f"<p>Rules: {_e(', '.join(a.gate_rules) or 'none')}. Result: {_e(gate_counts(a))}.</p>",
             table_html(gate_table(a), "gates", {1: "g-"}), "</section>",
             '<section id="problems"><h2>Problems</h2>', _list(a.problems), "</section>",
             '<section id="plots"><h2>Plots</h2>', plots_html(a, run_dir), "</section>",
             '<section id="environment"><h2>Environment</h2>', table_html(environment_table(a), "environment"),
             "<h3>Tiny model weight hashes</h3>", table_html(tiny_table(a), "tiny-models"), "</section>"]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>Consensus-readiness report: {_e(a.matrix)} ({_e(a.run_id)})</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")
