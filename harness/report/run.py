"""Render an analysed run (harness.analysis.model.Analysis) as Markdown, JSON and HTML.

Rendering decides nothing: no thresholds, no verdicts, only the fields of the Analysis.
The table builders below return plain strings and are shared by the Markdown and HTML
renderers (harness.report.html), so both show the same tables. Output is deterministic:
dict-keyed fields are shown in a fixed order, floats with fixed digits, and nothing that
changes between renders (clock, cwd) is written -- only a.run_id and a.run_dir name the run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from harness.analysis.model import Analysis, ConfigResult, DimensionSummary, FleetNode, RunSummary
from harness.analysis.summary import ordered_dimensions
from harness.compare.levels import FINDING_TEXT, LEVELS, RULE_NAMES  # one vocabulary
from harness.report.heatmap import map_table
from harness.vocabulary import MAP_LEVELS, MAP_MEANING, VERDICT_SHORT, VERDICT_TEXT

FORMATS = {"md": "report.md", "html": "report.html", "json": "report.json"}
MAIN_LIBRARIES = ("torch", "transformers", "bitsandbytes")
TOP_FINDINGS = 2

Table = tuple[list[str], list[list[str]]]


# --- formatting ------------------------------------------------------------------------------
def fmt(x: Any, digits: int = 3) -> str:
    """None -> '-', bool -> yes/no, int as is, float with ``digits`` fixed decimals."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    if isinstance(x, (dict, list)):
        return json.dumps(x, sort_keys=True, separators=(",", ":"))
    return str(x)


def mib(nbytes: int | float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.1f}"


def _ordered(keys: Any, order: tuple[str, ...]) -> list[str]:
    """Known keys in ``order`` first, the rest alphabetically."""
    keys = list(keys)
    return [k for k in order if k in keys] + sorted(k for k in keys if k not in order)


def fmt_levels(levels: Mapping[Any, int]) -> str:  # keys: level names (a Literal or str)
    return ", ".join(f"{k} {levels[k]}" for k in _ordered(levels, LEVELS)) or "-"


def fmt_steps(steps: list[int]) -> str:
    """Summary of first divergence steps: the values when few, else n/min/median/max."""
    if not steps:
        return "-"
    s = sorted(steps)
    if len(s) <= 5:
        return ", ".join(str(v) for v in s)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return f"n={len(s)}, min {s[0]}, median {median:g}, max {s[-1]}"


def fmt_mapping(d: dict[str, Any] | None, digits: int = 3) -> str:
    return ", ".join(f"{k}={fmt(d[k], digits)}" for k in sorted(d)) if d else "-"


# --- tables (shared by Markdown and HTML) ----------------------------------------------------
def summary_of(a: Analysis) -> RunSummary:
    """The analysis' summary; one is built for a document that has none (decided by the
    analysis' own code, never here)."""
    if a.summary is not None:
        return a.summary
    from harness.analysis.summary import summarize

    return summarize(a)


def verdict_count_line(summary: RunSummary) -> str:
    """ "4 ready, 2 ready with tolerance, 0 not ready" (+ failed/skipped/untested when present)."""
    v = summary.verdicts
    parts = [f"{v.get(k, 0)} {VERDICT_SHORT[k]}" for k in ("ready", "ready_with_tolerance", "not_ready")]
    parts += [f"{v[k]} {VERDICT_SHORT[k]}" for k in ("failed", "untested", "skipped") if v.get(k)]
    return ", ".join(parts)


def rule_line(summary: RunSummary) -> str:
    if not summary.rule_needed:
        return "none: no configuration is acceptable under any rule"
    return f"{summary.rule_needed} (the weakest rule an accepted configuration passes under)"


def summary_facts(a: Analysis) -> list[tuple[str, str]]:
    """The label/value lines of the summary, shared by every renderer."""
    s = summary_of(a)
    return [
        ("Configurations", f"{len(a.configs)}: {verdict_count_line(s)}"),
        ("Validation rule needed", rule_line(s)),
        ("Environment", s.environment or "-"),
    ]


def verdict_table(a: Analysis) -> Table:
    s = summary_of(a)
    head = ["Config", "Verdict", "Rule needed", "Reason"]
    return head, [[c.config_id, c.verdict, s.rule_by_config.get(c.config_id) or "-", c.reason] for c in a.configs]


def network_table(a: Analysis) -> Table:
    """Per configuration, a 3-node validation group under the kind's network rule: P(task
    accepted), P(task aborted), expected share of honest executions invalidated."""
    head = ["Config", "Network rule", "P(accepted)", "P(aborted)", "Invalidated", "Triples"]
    rows = [
        [
            c.config_id,
            c.network.rule,
            fmt(c.network.p_accepted),
            fmt(c.network.p_aborted),
            fmt(c.network.invalidated),
            fmt(c.network.triples),
        ]
        for c in a.configs
        if c.network
    ]
    return head, rows


def findings_lines(a: Analysis, limit: int | None = None) -> list[str]:
    found = summary_of(a).findings
    return [f"{f.severity}: {f.text}" for f in (found if limit is None else found[:limit])]


def warnings_table(a: Analysis) -> Table:
    head = ["Count", "Source", "Warning", "Where"]
    return head, [
        [str(w.count), w.source, w.message, ", ".join(w.where[:4]) + (" ..." if len(w.where) > 4 else "")]
        for w in a.warnings
    ]


def has_quantization(c: ConfigResult) -> bool:
    """Quantized, or quantization metadata beyond zero layer counts."""
    q = c.quantization or {}
    return bool(c.quantize_bits) or any(v for k, v in q.items() if k not in ("quantized_layers", "linear_layers"))


def _quantization_rows(q: dict[str, Any], prefix: str = "") -> list[list[str]]:
    rows = []
    for key in _ordered(q, ("backend", "bits", "quantized_layers")):
        value, label = q[key], prefix + key.replace("_", " ")
        if key == "linear_layers" and "quantized_layers" in q:
            continue
        if key == "quantized_layers" and "linear_layers" in q:
            rows.append([label, f"{value} of {q['linear_layers']} Linear layers"])
        elif isinstance(value, dict) and all(isinstance(v, dict) for v in value.values()):  # per stage
            for name in sorted(value):
                rows += _quantization_rows(value[name], f"{prefix}{name}: ")
        elif isinstance(value, dict):
            rows.append([label, fmt_mapping(value)])
        elif isinstance(value, list):
            rows.append([label, ", ".join(str(v) for v in value) or "-"])
        else:
            rows.append([label, fmt(value)])
    return rows


def quantization_table(c: ConfigResult) -> Table:
    """The quantization metadata as Field/Value rows (layer counts as "25 of 30", chained
    tasks per stage), never as raw JSON."""
    rows = _quantization_rows(dict(c.quantization or {}))
    return ["Quantization", "Value"], rows


def config_cost_facts(c: ConfigResult) -> list[tuple[str, str]]:
    k = c.cost
    facts = [
        ("Latency median / p90", f"{fmt(k.latency_s.get('median'))} s / {fmt(k.latency_s.get('p90'))} s"),
        ("Model load", f"{fmt(k.load_s)} s"),
        ("Peak memory", f"{mib(k.peak_memory_bytes)} MiB ({fmt(k.memory_kind)})"),
    ]
    if k.real_time_factor is not None:
        facts.append(("Real-time factor", f"{fmt(k.real_time_factor, 2)} audio s per wall s"))
    if k.tokens_per_second is not None:
        facts.append(("Throughput", f"{fmt(k.tokens_per_second, 1)} tokens/s"))
    return facts


def agreement_table(a: Analysis) -> Table:
    """Per configuration and pair rule (each figure is what that validator decides): P(3/3),
    P(2/3) = P(task accepted), P(aborted), invalidated share."""
    head = ["Config", "Rule", "P(3/3)", "P(2/3) = accepted", "P(aborted)", "Invalidated", "Triples"]
    rows = []
    for c in a.configs:
        for rule in _ordered(c.agreement, RULE_NAMES):
            g = c.agreement[rule]
            mark = " (network)" if c.network and c.network.rule == rule else ""
            rows.append(
                [
                    c.config_id,
                    rule + mark,
                    fmt(g.get("p3of3")),
                    fmt(g.get("p2of3")),
                    fmt(g.get("p_aborted")),
                    fmt(g.get("invalidated")),
                    fmt(g.get("triples")),
                ]
            )
    return head, rows


def network_rule_lines(a: Analysis) -> list[str]:
    """Each network rule in use once, with its label (the network's own, or proposed)."""
    seen: dict[str, str] = {}
    for c in a.configs:
        if c.network:
            seen.setdefault(f"{c.kind}: {c.network.rule}", c.network.label)
    return [f"{k} -- {v}" for k, v in seen.items()]


def _dimension_row(name: str, d: DimensionSummary) -> list[str]:
    steps = fmt_steps(d.first_divergence)
    if d.findings:
        steps += " (findings: " + ", ".join(f"{k} {v}" for k, v in d.findings.items()) + ")"
    if d.stages:  # chained tasks: where the divergence began
        steps += " (began in: " + ", ".join(f"{k} {v}" for k, v in d.stages.items()) + ")"
    if d.explained:  # the replay rule explained each first divergent step
        steps += " (explained: " + ", ".join(f"{k} {v}" for k, v in d.explained.items()) + ")"
    if d.not_compared:  # pairs of one kernel class: named, never a level
        if not d.pairs:
            return [name, "0", "-", "untested", f"{d.not_compared} pair(s) not compared: {d.not_compared_reason}"]
        aside = f"{d.not_compared} more pair(s) not compared: {d.not_compared_reason}"
        steps = aside if steps == "-" else f"{steps} ({aside})"
    return [name, str(d.pairs), fmt_levels(d.levels), fmt(d.worst), steps]


def evidence_table(c: ConfigResult) -> Table:
    head = ["Dimension", "Pairs", "Levels", "Worst", "First divergence"]
    return head, [_dimension_row(k, c.dimensions[k]) for k in ordered_dimensions(list(c.dimensions))]


def config_facts(c: ConfigResult) -> list[tuple[str, str]]:
    """Label/value lines shown above a configuration's evidence table."""
    facts = [
        ("Task", f"{c.task} ({c.kind})"),
        ("Model", c.model),
        (
            "Axes",
            f"dtype {c.dtype}, quantize {f'{c.quantize_bits} bits' if c.quantize_bits else 'none'}, "
            f"device {c.device}, profile {c.profile}",
        ),
        ("Verdict", f"{VERDICT_TEXT.get(c.verdict, c.verdict)} -- {c.reason}"),
        ("Executions", ", ".join(f"{k} {c.counts[k]}" for k in sorted(c.counts)) or "-"),
    ]
    if c.validator:
        v = c.validator
        cal = (
            f"; calibration {v['calibration_file']} ({v.get('signed_by') or 'unsigned'}), honest sources "
            f"{', '.join(v['sources'])}, bounds max abs "
            f"{c.thresholds['waveform_max_abs']:.3g}, rel-L2 {c.thresholds['waveform_rel_l2']:.3g}"
            if v.get("sources") is not None and c.thresholds
            else ""
        )
        facts.append(
            (
                "Named validator",
                f"{v['rule']} (measured false accept {v['false_accept']:.3f}, false reject "
                f"{v['false_reject']:.3f}, {v['pairs']} held-out pairs{cal})",
            )
        )
    if c.network:
        facts.append(("Network rule", f"{c.network.rule} -- {c.network.label}"))
    if c.replay:
        r = c.replay
        line = f"{r['accepted']} of {r['replayed']} executions replay against the task"
        if r["flips"]:
            line += (
                f" ({r['flips']} near-tie flip(s) of {r['positions']} positions, largest gap {fmt(r['largest_gap'])})"
            )
        if r.get("margin") is not None:
            line += f"; margin {fmt(r['margin'])} ({r.get('margin_from') or 'uncalibrated'})"
        if r["rejected"]:
            line += f"; {r['rejected']} rejected, first: {r['first_rejection']}"
        if r["not_replayable"]:
            line += f"; {r['not_replayable']} not replayable: {r['not_replayable_reason']}"
        facts.append(("Replay", line))
    for name in ordered_dimensions(list(c.dimensions)):
        explanation = c.dimensions[name].explanation
        if explanation:
            facts.append((f"First divergence ({name})", explanation))
    for f in sorted({f for d in c.dimensions.values() for f in d.findings}):
        facts.append(("Finding", f"{f}: {FINDING_TEXT.get(f, f)}"))
    if c.seed_note:
        facts.append(("Seed", c.seed_note))
    load = c.dimensions.get("load")
    if load is not None and load.pairs:
        began = f", first divergent step {fmt_steps(load.first_divergence)}" if load.first_divergence else ""
        facts.append(
            (
                "Cold vs warm",
                f"{load.worst} in {load.pairs} pair(s){began} (a node's first task against one "
                f"served from its loaded model)",
            )
        )
    return facts


def example_table(a: Analysis) -> Table:
    head = ["Config", "Dimension", "A", "B", "Level", "Finding", "Stage", "First divergence", "Metrics"]
    rows = []
    for p in a.examples:
        step = "-" if p.first_divergence is None else f"{p.first_divergence} of {fmt(p.steps_total)}"
        if p.explanation and p.explanation.get("cls"):
            step += f" ({p.explanation['cls']}: {p.explanation.get('sentence', '')})"
        rows.append(
            [
                p.config_id,
                p.dimension,
                p.a,
                p.b,
                p.level,
                p.finding or "-",
                p.stage or "-",
                step,
                fmt_mapping(p.metrics),
            ]
        )
    return head, rows


def drift_table(a: Analysis) -> Table:
    head = ["Config", "Pairs", "Levels", "Worst", "First divergence"]
    rows = [[c.config_id] + _dimension_row("", c.dtype_drift)[1:] for c in a.configs if c.dtype_drift]
    return head, rows


def lint_rows(a: Analysis) -> list[tuple[str, list[str]]]:
    """Each distinct warning once (first-seen order) with the configurations it came from."""
    seen: dict[str, list[str]] = {}
    for c in a.configs:
        for w in c.lint:
            ids = seen.setdefault(w, [])
            if c.config_id not in ids:
                ids.append(c.config_id)
    return list(seen.items())


def cost_table(a: Analysis) -> Table:
    head = [
        "Config",
        "Executions",
        "Latency median (s)",
        "Latency p90 (s)",
        "Load (s)",
        "Peak memory (MiB)",
        "Memory kind",
        "RTF",
        "Tokens/s",
        "TTFT (s)",
    ]
    rows = []
    for c in a.configs:
        k = c.cost
        rows.append(
            [
                c.config_id,
                str(k.executions),
                fmt(k.latency_s.get("median")),
                fmt(k.latency_s.get("p90")),
                fmt(k.load_s),
                mib(k.peak_memory_bytes),
                fmt(k.memory_kind),
                fmt(k.real_time_factor),
                fmt(k.tokens_per_second),
                fmt(k.time_to_first_token_s),
            ]
        )
    return head, rows


def model_table(a: Analysis) -> Table:
    head = ["Model", "Kind", "Configs", "Verdicts", "Best verdict", "Median latency (s)", "Peak memory (MiB)"]
    rows = [
        [
            m.model,
            m.kind,
            str(m.configs),
            ", ".join(f"{k} {m.verdicts[k]}" for k in sorted(m.verdicts)) or "-",
            m.best_verdict,
            fmt(m.median_latency_s),
            mib(m.peak_memory_bytes),
        ]
        for m in a.models
    ]
    return head, rows


def gate_table(a: Analysis) -> Table:
    return ["Config", "Gate", "Reason"], [[g.config_id, "passed" if g.passed else "FAILED", g.reason] for g in a.gates]


def environment_table(a: Analysis) -> Table:
    env = a.environment
    libs = env.get("libraries") or {}
    rows = [
        ["Processor", fmt(env.get("processor"))],
        ["CPU count", fmt(env.get("cpu_count"))],
        ["Machine", fmt(env.get("machine"))],
        ["OS", fmt(env.get("os"))],
        ["Python", fmt(env.get("python"))],
    ]
    for name in _ordered(set(libs) | set(MAIN_LIBRARIES), MAIN_LIBRARIES):
        value = libs.get(name) or (env.get("torch") if name == "torch" else None)
        rows.append([name, fmt(value)])
    cuda = env.get("cuda_available")
    rows += [
        [
            "CUDA",
            fmt(env.get("cuda_runtime")) + ("" if cuda is None else " (available)" if cuda else " (not available)"),
        ],
        ["cuDNN", fmt(env.get("cudnn"))],
        ["GPU driver", fmt(env.get("driver"))],
        ["GPUs", ", ".join(str(g) for g in env.get("gpu_names") or []) or "none"],
        ["Torch threads", fmt(env.get("torch_threads"))],
        ["BLAS", fmt(env.get("blas"))],
    ]
    return ["Field", "Value"], rows


def tiny_table(a: Analysis) -> Table:
    return ["Tiny model", "Weight hash"], [[k, a.tiny_models[k]] for k in sorted(a.tiny_models)]


def meta_lines(a: Analysis) -> list[tuple[str, str]]:
    lines = [("Run id", a.run_id), ("Run directory", a.run_dir), ("Matrix", a.matrix)]
    if a.description:
        lines.append(("Description", a.description))
    lines += [
        ("Harness version", fmt(a.harness_version)),
        ("Analysis schema", str(a.schema_version)),
        ("Records", str(a.records)),
    ]
    return lines


def verdict_counts(a: Analysis) -> str:
    counts: dict[str, int] = {}
    for c in a.configs:
        counts[c.verdict] = counts.get(c.verdict, 0) + 1
    order = tuple(VERDICT_TEXT)
    return ", ".join(f"{counts[v]} {v}" for v in _ordered(counts, order)) or "none"


def gate_counts(a: Analysis) -> str:
    passed = sum(1 for g in a.gates if g.passed)
    return f"{passed} passed, {len(a.gates) - passed} failed"


# --- fleet tables (a run whose executions came from more than one node) ------------------------
CONSENSUS_RULES = tuple(r for r in RULE_NAMES if r != "result_hash")  # the pair rules simulated per node mix


def node_label(n: FleetNode) -> str:
    """Hostname and the start of the node key (emulated nodes share a hostname)."""
    return n.hostname if n.key == n.hostname else f"{n.hostname}/{n.key[:8]}"


def node_table(a: Analysis) -> Table:
    head = ["Node", "Environment class", "Ray node id", "Executions", "Reference"]
    rows = [
        [node_label(n), fmt(n.env_class), fmt(n.ray_node_id), str(n.executions), "yes" if n.reference else ""]
        for n in (a.fleet.nodes if a.fleet else [])
    ]
    return head, rows


def node_config_table(a: Analysis) -> Table:
    """Configuration x node: the worst level against the reference node's executions."""
    nodes = a.fleet.nodes if a.fleet else []
    head = ["Config"] + [node_label(n) for n in nodes]
    rows = []
    for c in a.configs:
        if c.nodes is None:
            continue
        rows.append([c.config_id] + [c.nodes.levels.get(n.key, "-") for n in nodes])
    return head, rows


def class_table(a: Analysis) -> Table:
    """Per configuration: the verdict within each environment class, the level across them,
    and 3-node agreement for a network with the run's hardware mix."""
    classes = list(a.fleet.mix) if a.fleet else []
    head = ["Config"] + classes + ["Across classes", "Summary"] + [f"P(3/3) {r}" for r in CONSENSUS_RULES] + ["Note"]
    rows = []
    for c in a.configs:
        n = c.nodes
        if n is None:
            continue
        rows.append(
            [c.config_id]
            + [n.class_verdicts.get(k, "-") for k in classes]
            + [fmt(n.across_classes), n.summary]
            + [fmt(n.consensus.get(r, {}).get("p3of3")) for r in CONSENSUS_RULES]
            + [fmt(n.consensus_note)]
        )
    return head, rows


def mix_line(a: Analysis) -> str:
    if not a.fleet:
        return ""
    return "Hardware mix: " + ", ".join(f"{k} {v:.2f}" for k, v in a.fleet.mix.items()) + "."


# --- Markdown ----------------------------------------------------------------------------------
def _md_cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\r", " ").replace("\n", " ") or " "


def md_table(table: Table, empty: str = "_None._") -> list[str]:
    head, rows = table
    if not rows:
        return [empty, ""]
    out = ["| " + " | ".join(_md_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return out + [""]


def _md_bold(text: str) -> str:
    return "**" + text.replace("*", "\\*") + "**"


def render_markdown(a: Analysis) -> str:
    summary = summary_of(a)
    out = [f"# Consensus-readiness report: {a.matrix}", "", _md_bold(summary.headline), ""]
    out += [f"- {k}: {v}" for k, v in summary_facts(a)]
    out += [f"- Finding: {line}" for line in findings_lines(a, TOP_FINDINGS)] + [""]
    out += [f"- {k}: `{v}`" if k in ("Run id", "Run directory") else f"- {k}: {v}" for k, v in meta_lines(a)]
    out += [
        "",
        "## Verdict map",
        "",
        "Worst comparison level per configuration and dimension "
        "(seed: whether different seeds give different outputs; dtype: drift from float32).",
        "",
    ]
    out += md_table(map_table(a))
    out += ["Levels: " + "; ".join(f"`{lv}` {MAP_MEANING[lv]}" for lv in MAP_LEVELS) + ".", ""]
    out += ["## Verdicts", "", f"Configurations: {len(a.configs)} ({verdict_counts(a)}).", ""]
    out += md_table(verdict_table(a))
    present = [v for v in VERDICT_TEXT if any(c.verdict == v for c in a.configs)]
    out += [f"- `{v}`: {VERDICT_TEXT[v]}" for v in present] + ([""] if present else [])
    out += ["## Findings", ""] + (
        [f"- {line}" for line in findings_lines(a)] + [""] if summary.findings else ["_None._", ""]
    )
    out += [
        "## Agreement under the network's rule",
        "",
        "A validated task runs on 3 nodes; any agreeing pair accepts it, an odd node is invalidated "
        "(slashable), no agreeing pair aborts it. Figures per rule are what that validator decides.",
        "",
    ]
    out += [f"- {line}" for line in network_rule_lines(a)] + [""]
    out += md_table(network_table(a))
    out += md_table(agreement_table(a))

    out += ["## Evidence", "", f"Thresholds: {fmt_mapping(a.thresholds)}", ""]
    for c in a.configs:
        out += [f"### {c.config_id}", ""] + [f"- {k}: {v}" for k, v in config_facts(c)]
        out += [f"- {k}: {v}" for k, v in config_cost_facts(c)] + [""]
        out += md_table(evidence_table(c), "_No comparisons._")
        if has_quantization(c):
            out += md_table(quantization_table(c))
        if c.failures:
            out += ["Failures:", ""] + [f"- {_md_cell(f)}" for f in c.failures] + [""]
    out += ["### Worst pairs", ""] + md_table(example_table(a))

    out += ["## Dtype drift", ""] + md_table(drift_table(a))
    out += ["## Lint warnings", ""]
    lints = lint_rows(a)
    out += [f"- {w} ({', '.join(ids)})" for w, ids in lints] + [""] if lints else ["_None._", ""]
    out += [
        "## Library warnings",
        "",
        "Distinct warnings with counts (worker logs: lines; Python warnings: executions that raised them).",
        "",
    ] + md_table(warnings_table(a))

    out += _md_fleet(a)
    out += ["## Costs", ""] + ([f"_Note: {a.parallel_note}._", ""] if a.parallel_note else []) + md_table(cost_table(a))
    out += ["## Model comparison", ""] + md_table(model_table(a))
    out += ["## Gates", "", f"Rules: {', '.join(a.gate_rules) or 'none'}. Result: {gate_counts(a)}.", ""]
    out += md_table(gate_table(a))
    out += ["## Problems", ""] + ([f"- {p}" for p in a.problems] + [""] if a.problems else ["_None._", ""])
    out += ["## Environment", ""] + md_table(environment_table(a))
    out += ["### Tiny model weight hashes", ""] + md_table(tiny_table(a))
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def _md_fleet(a: Analysis) -> list[str]:
    """The nodes section of a fleet run (nothing for a run on one node)."""
    if not a.fleet:
        return []
    return (
        ["## Nodes", "", f"Reference node: `{a.fleet.reference_node}`. {mix_line(a)}", ""]
        + md_table(node_table(a))
        + ["### Agreement with the reference node", ""]
        + md_table(node_config_table(a))
        + ["### Verdicts per environment class", ""]
        + md_table(class_table(a))
    )


# --- JSON ---------------------------------------------------------------------------------------
def _non_finite_path(obj: Any, path: str = "") -> str | None:
    if isinstance(obj, float) and not math.isfinite(obj):
        return path or "."
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for k, v in items:
        found = _non_finite_path(v, f"{path}.{k}" if isinstance(k, str) else f"{path}[{k}]")
        if found:
            return found
    return None


def render_json(a: Analysis) -> str:
    """The Analysis as JSON with sorted keys; a NaN or infinity is an error naming its field."""
    doc = a.model_dump(mode="json")
    try:
        return json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError:
        raise ValueError(
            f"analysis field {_non_finite_path(doc)} is not a finite number; JSON cannot hold NaN or infinity"
        ) from None
