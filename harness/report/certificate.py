"""Render a hardware certificate (harness.analysis.certificate.Certificate) as Markdown.

Rendering decides nothing: every verdict is in the certificate. It lives with the other
renderers so Markdown is written in one place (report/).
"""

from __future__ import annotations

from typing import Any

from harness.analysis.certificate import POOL_FIELDS, Certificate
from harness.analysis.crossrun import DifferenceGroup
from harness.execution.env import env_value
from harness.report.run import fmt, fmt_mapping, md_table

ENV_FIELDS = (
    "processor",
    "cpu_count",
    "gpu_names",
    "driver",
    "cuda_runtime",
    "cudnn",
    "torch",
    "torch_threads",
    "libraries.transformers",
    "libraries.bitsandbytes",
    "libraries.consensus-harness",
    "blas",
    "os",
)


def what_differed(groups: list[DifferenceGroup]) -> list[str]:
    """The "What differed" section of a certificate or a cross-run comparison: the pairs grouped
    by the fields that differ between their two sides (environment, axes, flags)."""
    if not groups:
        return []
    rows = [
        [
            ", ".join(g.fields) or "(nothing recorded)",
            str(g.pairs),
            ", ".join(f"{k} {v}" for k, v in g.levels.items()),
            fmt(g.worst),
        ]
        for g in groups
    ]
    return ["## What differed", "", *md_table((["differing fields", "pairs", "levels", "worst"], rows))]


METRIC_KEYS = ("rel_l2", "cosine", "snr_db", "max_abs", "hamming")


def fmt_metrics(metrics: dict[str, Any]) -> str:
    """The closeness metrics, small numbers in scientific notation (max_abs 1.8e-07, not 0.000)."""
    parts = []
    for k in METRIC_KEYS:
        if k in metrics:
            v = metrics[k]
            text = f"{v:.2e}" if isinstance(v, float) and v != 0 and abs(v) < 1e-3 else fmt(v)
            parts.append(f"{k}={text}")
    return ", ".join(parts) or "-"


def render_certificate(cert: Certificate) -> str:
    lines = [
        f"# Hardware certificate: {cert.candidate.run_id} against {cert.reference.run_id}",
        "",
        f"**{cert.summary}**",
        "",
    ]
    if cert.emulation:
        settings = ", ".join(
            f"{k} = {cert.emulation[k]}" for k in ("threads", "isa") if cert.emulation.get(k) is not None
        )
        lines += [f"> Emulation: {settings}. {cert.emulation.get('note')}.", ""]
    if getattr(cert, "device", None):
        lines += [
            f"> Device: the reference's cells (run on {', '.join(cert.reference_devices) or 'its device'}) "
            f"ran here on {cert.device}, matched ignoring the device.",
            "",
        ]
    lines += [
        f"Matched by `{cert.match}`; thresholds {fmt_mapping(cert.thresholds)}.",
        "",
        "| | reference | candidate |",
        "|---|---|---|",
        f"| run | {cert.reference.run_id} | {cert.candidate.run_id} |",
        f"| source | {cert.reference.source} | {cert.candidate.source} |",
        f"| bundle sha256 | {cert.reference.bundle_sha256 or '-'} | {cert.candidate.bundle_sha256 or '-'} |",
        f"| bundle signature | {getattr(cert, 'reference_signed_by', None) or '-'} | - |",
    ]
    for name in ENV_FIELDS:
        a, b = env_value(cert.reference.environment, name), env_value(cert.candidate.environment, name)
        mark = " (differs)" if a != b else ""
        lines.append(f"| {name}{mark} | {fmt(a)} | {fmt(b)} |")
    lines += [
        "",
        "Environment fields that differ: " + (", ".join(cert.environment_differs) or "none"),
        "",
        "## Configurations",
        "",
    ]
    rows = [
        [
            c.config_id,
            c.verdict,
            str(c.compared),
            ", ".join(f"{k} {v}" for k, v in c.levels.items()) or "-",
            fmt(c.first_divergence),
            fmt_metrics(c.metrics),
            c.network_rule or "-",
            fmt((c.network or {}).get("p_accepted")),
            fmt((c.network or {}).get("p_aborted")),
            fmt((c.network or {}).get("invalidated")),
            fmt(c.consensus.get("bitwise", {}).get("p3of3")),
            c.reason,
        ]
        for c in cert.configs
    ]
    lines += md_table(
        (
            [
                "configuration",
                "verdict",
                "cells",
                "levels",
                "first divergence",
                "worst pair metrics",
                "network rule",
                "P(accepted)*",
                "P(aborted)*",
                "invalidated*",
                "P(3/3) bitwise*",
                "reason",
            ],
            rows,
        )
    )
    lines += [
        "\\* a network with half its nodes like the reference and half like the candidate; a validated task "
        "runs on 3 nodes, any agreeing pair accepts it, an odd node is invalidated (slashable), no agreeing "
        "pair aborts it.",
        "",
    ]
    labels = {f"{c.kind}: {c.network_rule}": c.network_label for c in cert.configs if c.network_rule}
    lines += [f"- {k} -- {v}" for k, v in labels.items()] + ([""] if labels else [])
    pools = [
        [c.config_id, who, *(fmt(p.get(f)) for f in POOL_FIELDS)] for c in cert.configs for who, p in c.pool.items()
    ]
    if pools:
        lines += ["## Pool keys", ""] + md_table((["configuration", "side", *POOL_FIELDS], pools))
    issues = [(c.config_id, i) for c in cert.configs for i in c.issues]
    if issues:
        lines += ["## Cells not certified", ""] + [f"- {cid}: {i}" for cid, i in issues[:200]] + [""]
    lines += what_differed(cert.groups)
    for title, items in (
        ("Not certified", cert.not_certified),
        ("Candidate cells without a reference", cert.unmatched_candidate),
        ("Problems", cert.problems),
    ):
        if items:
            lines += [f"## {title}", ""] + [f"- {x}" for x in items[:200]] + [""]
    return "\n".join(lines).rstrip() + "\n"
