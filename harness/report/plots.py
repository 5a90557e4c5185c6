"""The report's plots, drawn with matplotlib's object API (Figure + Agg, no pyplot, so no
global backend is changed) and embedded as base64 PNG: the page stays one file that works
offline. Every function returns an HTML fragment; a plot that cannot be drawn becomes a
short note (``safe``), so rendering never fails on one. matplotlib is optional.

Colours: the agreement chart uses the Okabe-Ito palette plus hatching, so rules stay
distinguishable for colour-blind readers and in black-and-white print.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.model import Analysis, ConfigResult, PairResult
from harness.report.run import fmt, fmt_mapping

NO_MATPLOTLIB = "matplotlib is not installed; plot omitted (pip install matplotlib)."
RULE_COLOURS = ("#0072B2", "#009E73", "#56B4E9", "#E69F00", "#D55E00", "#CC79A7")  # Okabe-Ito
RULE_HATCHES = ("", "\\\\", "//", "..", "xx", "++")
#: the pair rules charted (analysis agreement keys, harness.compare.levels.RULE_NAMES), strongest first
RULES = {rule: rule for rule in ("bitwise", "composite", "tokens", "tolerance", "perceptual")}
DPI = 96


def e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def note(text: str) -> str:
    return f'<p class="note">{e(text)}</p>'


def figure_class() -> type[Any] | None:
    try:
        from matplotlib.figure import Figure
    except Exception:  # not installed, or a broken install: notes instead of plots
        return None
    return Figure


def figure_html(fig: Any, alt: str, caption: str, config_id: str | None = None) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    attr = f' data-config="{e(config_id)}"' if config_id else ""
    return (
        f'<figure><img class="plot"{attr} alt="{e(alt)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{e(caption)}</figcaption></figure>"
    )


def safe(draw: Any, *args: Any) -> str:
    Figure = figure_class()
    if Figure is None:
        return note(NO_MATPLOTLIB)
    try:
        return str(draw(Figure, *args))
    except Exception as err:  # a plot must never take the report down with it
        return note(f"plot could not be drawn ({type(err).__name__}: {err})")


def label(config_id: str, width: int = 22) -> str:
    """A configuration id on two lines (split at a '/') when long, so axis labels stay narrow
    and the plot stays readable when a phone scales it down."""
    if len(config_id) <= width or "/" not in config_id:
        return config_id
    cuts = [i for i, ch in enumerate(config_id) if ch == "/"]
    cut = min(cuts, key=lambda i: abs(i - len(config_id) / 2))
    return config_id[: cut + 1] + "\n" + config_id[cut + 1 :]


def _height(n: int) -> float:
    return max(2.2, 0.55 * n + 1.2)


# --- the worst pair of one configuration ----------------------------------------------------------
def load_pair(pair: PairResult, run_dir: Path | None) -> tuple[dict[str, Any], dict[str, Any]] | str:
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


def pair_plot(Figure: Any, pair: PairResult, run_dir: Path | None) -> str:
    arrays = load_pair(pair, run_dir)
    if isinstance(arrays, str):
        return note(f"{pair.a} vs {pair.b}: {arrays}; no plot.")
    xa, xb = arrays
    what = f"{pair.dimension} pair {pair.a} vs {pair.b}"
    caption = (
        f"{what} -- level {pair.level}; first divergence {fmt(pair.first_divergence)} of "
        f"{fmt(pair.steps_total)} steps; {fmt_mapping(pair.metrics)}"
    )
    fig = Figure(figsize=(7, 3.6))
    top, bottom = fig.subplots(2, 1, sharex=True)
    if "waveform" in xa and "waveform" in xb:
        wa, wb = _mono(xa["waveform"]), _mono(xb["waveform"])
        n = min(len(wa), len(wb))
        top.plot(wa, lw=0.8, color="#0072B2", label="a (reference)")
        top.plot(wb, lw=0.8, ls="--", color="#D55E00", alpha=0.8, label=f"b ({pair.dimension})")
        top.set_ylabel("amplitude (ch 0)")
        bottom.plot(wb[:n] - wa[:n], lw=0.8, color="#D55E00")
        bottom.set_ylabel("b - a")
        bottom.set_xlabel("sample")
        alt = f"Waveform overlay and difference, {what}"
    elif "token_ids" in xa and "token_ids" in xb:
        ta, tb = _tokens(xa["token_ids"]), _tokens(xb["token_ids"])
        n = min(len(ta), len(tb))
        top.plot(np.arange(len(ta)), ta, "o-", ms=3, lw=1, color="#0072B2", label="a (reference)")
        top.plot(np.arange(len(tb)), tb, "s--", ms=3, lw=1, color="#D55E00", label=f"b ({pair.dimension})")
        top.set_ylabel("token id")
        bottom.bar(np.arange(n), (ta[:n] != tb[:n]).astype(int), width=0.8, color="#D55E00")
        bottom.set_ylabel("differs")
        bottom.set_yticks([0, 1])
        bottom.set_xlabel("generated token")
        if pair.first_divergence is not None:
            for ax in (top, bottom):
                ax.axvline(pair.first_divergence, color="k", ls=":", lw=1)
            bottom.annotate(
                f"first divergence @ {pair.first_divergence}",
                (pair.first_divergence, 0.5),
                xycoords=("data", "axes fraction"),
                xytext=(4, 0),
                textcoords="offset points",
                fontsize=8,
                bbox={"fc": "white", "ec": "none", "alpha": 0.8},
            )
        alt = f"Token ids of both outputs with the first divergence marked, {what}"
    else:
        return note(f"{what}: the artifacts hold neither a waveform nor token_ids; no plot.")
    top.legend(loc="best", fontsize=8)
    top.set_title(f"{pair.config_id}: worst pair ({pair.level})", fontsize=9)
    return figure_html(fig, alt, caption, pair.config_id)


# --- run-wide charts ---------------------------------------------------------------------------------
def agreement_chart(Figure: Any, a: Analysis) -> str:
    configs = [c for c in a.configs if c.agreement]
    if not configs:
        return note("No agreement estimates (no configuration had three executions to compare).")
    fig = Figure(figsize=(5.6, 0.75 * len(configs) + 2.0))
    ax = fig.subplots()
    rules = {**RULES, **({"replay": "replay"} if any("replay" in c.agreement for c in configs) else {})}
    width = 0.8 / len(rules)
    y = np.arange(len(configs))
    for i, (rule, level) in enumerate(rules.items()):
        p3 = [c.agreement.get(level, {}).get("p3of3") for c in configs]
        p2 = [c.agreement.get(level, {}).get("p2of3") for c in configs]
        pos = y + (i - (len(rules) - 1) / 2) * width
        ax.barh(
            pos,
            [v or 0 for v in p3],
            height=width,
            color=RULE_COLOURS[i],
            hatch=RULE_HATCHES[i],
            edgecolor="black",
            linewidth=0.4,
            label=f"{rule}: P(3 of 3)",
        )
        ax.plot(
            [v if v is not None else np.nan for v in p2],
            pos,
            "k|",
            ms=8,
            label="P(at least 2 of 3)" if i == 0 else None,
        )
    ax.set_yticks(y)
    ax.set_yticklabels([label(c.config_id) for c in configs], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("probability that 3 nodes agree")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.set_title("Agreement per validation rule", fontsize=9)
    return figure_html(
        fig,
        "Bar chart: probability that 3 nodes agree, per configuration and validation rule",
        "Bars: all 3 nodes agree; tick marks: at least 2 of 3 agree (the network's majority). "
        "Estimated from the observed executions.",
    )


def latency_plot(Figure: Any, a: Analysis) -> str:
    data = [(c.config_id, c.cost.latency_samples) for c in a.configs if c.cost.latency_samples]
    if not data:
        return note("No latency samples were recorded; no latency plot.")
    fig = Figure(figsize=(5.6, _height(len(data))))
    ax = fig.subplots()
    ax.boxplot([samples for _, samples in data], vert=False, widths=0.6)
    ax.set_yticks(range(1, len(data) + 1))
    ax.set_yticklabels([label(cid) for cid, _ in data], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("latency per execution (s, model load excluded)")
    values = [x for _, samples in data for x in samples if x > 0]
    if values and max(values) > 20 * min(values):  # very different scales: keep every box readable
        ax.set_xscale("log")
        ax.set_xlabel("latency per execution (s, log scale, model load excluded)")
    ax.set_title("Latency distribution per configuration", fontsize=9)
    return figure_html(
        fig,
        "Box plot of latency per configuration",
        "Latency of every execution (seconds, model load excluded): box = quartiles, line = median.",
    )


def _bars(Figure: Any, rows: list[tuple[str, float]], xlabel: str, title: str, colour: str) -> Any:
    fig = Figure(figsize=(5.6, _height(len(rows))))
    ax = fig.subplots()
    ax.barh(range(len(rows)), [v for _, v in rows], color=colour, edgecolor="black", linewidth=0.4)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label(k) for k, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    for i, (_, v) in enumerate(rows):
        ax.annotate(f"{v:.3g}", (v, i), xytext=(3, 0), textcoords="offset points", va="center", fontsize=7)
    ax.margins(x=0.15)
    return fig


def memory_plot(Figure: Any, a: Analysis) -> str:
    rows = [(c.config_id, c.cost.peak_memory_bytes / 2**20) for c in a.configs if c.cost.peak_memory_bytes]
    if not rows:
        return note("No peak memory was recorded; no memory plot.")
    kinds = sorted({c.cost.memory_kind for c in a.configs if c.cost.memory_kind})
    fig = _bars(
        Figure,
        rows,
        f"peak memory (MiB, {', '.join(kinds) or 'unknown kind'})",
        "Peak memory per configuration",
        "#56B4E9",
    )
    return figure_html(
        fig,
        "Bar chart of peak memory per configuration",
        "Peak memory (MiB): process RSS peak on the CPU, max allocated on CUDA.",
    )


def speed_plot(Figure: Any, a: Analysis) -> str:
    rtf = [(c.config_id, c.cost.real_time_factor) for c in a.configs if c.cost.real_time_factor is not None]
    tps = [
        (c.config_id, c.cost.tokens_per_second)
        for c in a.configs
        if c.cost.tokens_per_second is not None and c.cost.real_time_factor is None
    ]
    out = []
    if rtf:
        out.append(
            figure_html(
                _bars(
                    Figure,
                    rtf,
                    "real-time factor (audio seconds per wall second; > 1 is faster than real time)",
                    "Real-time factor (audio)",
                    "#E69F00",
                ),
                "Bar chart of real-time factor per audio configuration",
                "Real-time factor: seconds of audio produced per second of generation.",
            )
        )
    if tps:
        out.append(
            figure_html(
                _bars(Figure, tps, "throughput (new tokens per second)", "Throughput (text)", "#009E73"),
                "Bar chart of tokens per second per text configuration",
                "Throughput: new tokens generated per second of generation.",
            )
        )
    return "\n".join(out) or note("No real-time factor or throughput was recorded.")


def divergence_plot(Figure: Any, a: Analysis) -> str:
    from matplotlib.ticker import MaxNLocator

    steps = [s for c in a.configs for d in c.dimensions.values() for s in d.first_divergence]
    if not steps:
        return note("No first divergence steps were recorded; no histogram.")
    fig = Figure(figsize=(6, 3))
    ax = fig.subplots()
    ax.hist(steps, bins=max(1, min(30, len(set(steps)))), color="#0072B2", edgecolor="white")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("first divergent step (generated token / code frame / denoising step)")
    ax.set_ylabel("pairs")
    ax.set_title("First divergence steps, all configurations", fontsize=9)
    return figure_html(
        fig,
        "Histogram of first divergence steps over all configurations",
        f"First divergence step of {len(steps)} pairs across all configurations and dimensions.",
    )


def worst_pair(a: Analysis, c: ConfigResult) -> PairResult | None:
    return next((p for p in a.examples if p.config_id == c.config_id), None)
