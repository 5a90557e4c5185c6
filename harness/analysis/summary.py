"""The answer first: verdict counts, the validation rule the network would need, the findings
that matter and the environment in one line, decided here so every renderer (Markdown,
HTML, terminal) shows the same words and decides nothing.

Findings are derived generically from whatever dimensions the configurations carry (a new
comparison dimension, e.g. ``node`` or ``load``, yields findings without changes here; known
ones get a plainer phrase). A dimension is *judged* when the matrix's gate counts it for the
verdict; divergence there is critical, elsewhere a warning.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.analysis.model import Analysis, ConfigResult, Finding, LogWarning, RunSummary
from harness.compare.levels import level_rank, worst_level
from harness.vocabulary import ACCEPTED, DEFAULT_JUDGED, DIMENSIONS, RULE_STRENGTH, VERDICT_SHORT

SEVERITY_ORDER = ("critical", "warning", "info")
#: "... when <phrase>": plain words for known dimensions; others are named as they are
PHRASES = {name: d.phrase for name, d in DIMENSIONS.items()}
MAX_IDS = 3
KNOWN_DIMENSIONS = tuple(DIMENSIONS)


def ordered_dimensions(names: Iterable[str]) -> list[str]:
    """Known dimensions in a fixed order, then unknown ones alphabetically: the same order
    in every renderer, whatever order a document's keys came in."""
    names = set(names)
    return [d for d in KNOWN_DIMENSIONS if d in names] + sorted(names - set(KNOWN_DIMENSIONS))


def _ids(configs: list[str]) -> str:
    shown = ", ".join(configs[:MAX_IDS])
    return shown + (f" and {len(configs) - MAX_IDS} more" if len(configs) > MAX_IDS else "")


def _phrase(dim: str) -> str:
    return PHRASES.get(dim, f"the {dim} dimension changes")


def rule_for(c: ConfigResult, judged: Iterable[str]) -> str | None:
    """The validation rule this configuration passes under: bitwise when ready, the validator
    the matrix names when ready with tolerance; None when it is not acceptable (diverges, a
    finding, no named validator, failed, skipped, untested)."""
    if c.verdict not in ACCEPTED:
        return None
    worst = worst_level(s.worst for d, s in c.dimensions.items() if d in judged and s.pairs and s.worst)
    if c.verdict == "ready" or worst in (None, "bitwise"):
        return "bitwise"
    return (c.validator or {}).get("rule")


def _dimension_findings(a: Analysis, judged: tuple[str, ...]) -> list[Finding]:
    out: list[Finding] = []
    # seed and dtype are informational: different seeds *should* differ, and a cheaper dtype
    # is compared with float32 only to show its drift (their own findings come below)
    for dim in ordered_dimensions(d for c in a.configs for d in c.dimensions if d not in ("seed", "dtype")):
        divergent, loose = [], []
        all_pairs = True
        steps: list[int] = []
        changed: set[str] = set()
        for c in a.configs:
            s = c.dimensions.get(dim)
            if not s or not s.pairs or not s.worst:
                continue
            changed.update(s.changed)
            if s.worst == "divergent":
                divergent.append(c.config_id)
                all_pairs &= s.levels.get("divergent", 0) == s.pairs
                steps += s.first_divergence
            elif s.worst != "bitwise":
                loose.append((c.config_id, s.worst))
        is_judged = dim in judged
        if divergent:
            how = "any sampled task diverges" if all_pairs else "sampled tasks diverge"
            at = f"; first divergent step {min(steps)}" if steps else ""
            note = "" if is_judged else " (reported, not judged by the gate)"
            across = "; not consensus-ready across CPU kinds" if dim == "isa" else ""
            across += f"; what differed: {', '.join(sorted(changed))}" if changed else ""
            out.append(
                Finding(
                    severity="critical" if is_judged else "warning",
                    kind="divergent-dimension",
                    dimension=dim,
                    configs=divergent,
                    text=f"{dim}: {how} when {_phrase(dim)}, in {len(divergent)} configuration(s): "
                    f"{_ids(divergent)}{at}{note}{across}.",
                )
            )
        aside = [c.config_id for c in a.configs if (s := c.dimensions.get(dim)) is not None and s.not_compared]
        if aside:
            reason = next(c.dimensions[dim].not_compared_reason for c in a.configs if c.config_id == aside[0])
            out.append(
                Finding(
                    severity="info",
                    kind="not-a-comparison",
                    dimension=dim,
                    configs=aside,
                    text=f"{dim}: {reason}, in {len(aside)} configuration(s): {_ids(aside)}; both sides ran one "
                    f"kernel class, which shows nothing about another CPU kind and counts as no agreement "
                    f'(isa = "below-native" names the next narrower kernels on any machine).',
                )
            )
        if loose and is_judged:
            worst = worst_level(level for _, level in loose) or "tokens"
            ids = [cid for cid, _ in loose]
            what = "same tokens, different floats" if worst == "tokens" else f"outputs agree only at the {worst} level"
            out.append(
                Finding(
                    severity="warning",
                    kind="not-bitwise",
                    dimension=dim,
                    configs=ids,
                    text=f"{dim}: exact-hash validation rejects honest nodes when {_phrase(dim)} ({what}) in "
                    f"{len(ids)} configuration(s): {_ids(ids)}; they need a validator for the {worst} level"
                    + (f"; what differed: {', '.join(sorted(changed))}." if changed else "."),
                )
            )
    return out


def _signed(c: ConfigResult) -> bool:
    return str((c.validator or {}).get("signed_by") or "unsigned").startswith("signed")


def _upgrade_finding(a: Analysis) -> list[Finding]:
    """The upgrade question answered: which configurations keep their bytes across the
    stacks, which keep only their tokens, which change (and the versions that differed)."""
    kept: dict[str, list[str]] = {"bitwise": [], "tokens": [], "changed": []}
    changed: set[str] = set()
    for c in a.configs:
        s = c.dimensions.get("stack")
        if not s or not s.pairs or not s.worst:
            continue
        changed.update(s.changed)
        kept[s.worst if s.worst in ("bitwise", "tokens") else "changed"].append(c.config_id)
    if not any(kept.values()):
        return []
    parts = [
        f"{label} in {len(ids)} configuration(s)" + (f": {_ids(ids)}" if ids else "")
        for label, ids in (
            ("bytes kept", kept["bitwise"]),
            ("only tokens kept", kept["tokens"]),
            ("outputs changed", kept["changed"]),
        )
    ]
    what = f" ({', '.join(sorted(changed))})" if changed else ""
    return [
        Finding(
            severity="info",
            kind="stack-upgrade",
            dimension="stack",
            configs=[cid for ids in kept.values() for cid in ids],
            text=f"stack: when {_phrase('stack')}{what}: {'; '.join(parts)}.",
        )
    ]


def _other_findings(a: Analysis) -> list[Finding]:
    out: list[Finding] = []
    failed = [c.config_id for c in a.configs if c.verdict == "failed"]
    if failed:
        first = next(c.reason for c in a.configs if c.verdict == "failed")
        out.append(
            Finding(
                severity="critical",
                kind="failed",
                configs=failed,
                text=f"{len(failed)} configuration(s) failed: {_ids(failed)} ({first}).",
            )
        )
    no_seed = [c.config_id for c in a.configs if c.seed_sensitive is False]
    if no_seed:
        out.append(
            Finding(
                severity="warning",
                kind="seed-no-effect",
                dimension="seed",
                configs=no_seed,
                text=f"seed: different seeds give identical outputs in {len(no_seed)} configuration(s): "
                f"{_ids(no_seed)}; a node could skip the seed and still agree.",
            )
        )
    drift = [(c.config_id, c.dtype_drift.worst) for c in a.configs if c.dtype_drift and c.dtype_drift.worst]
    far = [cid for cid, level in drift if level_rank(level) >= level_rank("perceptual")]
    if far:
        out.append(
            Finding(
                severity="info",
                kind="dtype-drift",
                dimension="dtype",
                configs=far,
                text=f"dtype: {len(far)} configuration(s) land far from float32 (perceptual or divergent): "
                f"{_ids(far)}; nodes must agree on dtype and quantization, not only on the task.",
            )
        )
    unsigned = [
        c.config_id for c in a.configs if c.validator and c.validator.get("sources") is not None and not _signed(c)
    ]
    if unsigned:
        out.append(
            Finding(
                severity="warning",
                kind="unsigned-calibration",
                configs=unsigned,
                text=f"calibration: {len(unsigned)} configuration(s) are judged by an unsigned calibration: "
                f"{_ids(unsigned)}; anyone can edit and reseal it (sign it with --sign KEY; docs/trust.md).",
            )
        )
    if a.problems:
        out.append(
            Finding(
                severity="warning",
                kind="problems",
                text=f"{len(a.problems)} problem(s) reading the run: {a.problems[0]}",
            )
        )
    return out


def _deciding_findings(a: Analysis, found: list[Finding]) -> list[Finding]:
    """The reason behind every not_ready verdict that no dimension finding already names (a
    suspicious pair, a validator that rejects or does not cover the configuration): the finding
    that decides a verdict is always among the findings that matter."""
    named = {cid for f in found if f.severity == "critical" for cid in f.configs}
    out = []
    for c in a.configs:
        if c.verdict == "not_ready" and c.config_id not in named:
            dims = ", ".join(c.decided_by) or "-"
            out.append(
                Finding(
                    severity="critical",
                    kind="verdict-reason",
                    dimension=c.decided_by[0] if c.decided_by else None,
                    configs=[c.config_id],
                    text=f"{c.config_id} is {VERDICT_SHORT['not_ready']} ({dims}): {c.reason}.",
                )
            )
    return out


def _warning_finding(warnings: list[LogWarning]) -> list[Finding]:
    if not warnings:
        return []
    top = warnings[0]
    return [
        Finding(
            severity="info",
            kind="library-warnings",
            text=f"{len(warnings)} distinct library warning(s); most frequent ({top.count}x, {top.source}): "
            f"{top.message[:160]}",
        )
    ]


def headline(a: Analysis, rule_needed: str | None) -> str:
    """One sentence: what the operator should do."""
    n = {
        v: sum(1 for c in a.configs if c.verdict == v) for v in ("ready", "ready_with_tolerance", "not_ready", "failed")
    }
    bad = [c.config_id for c in a.configs if c.verdict in ("not_ready", "failed")]
    ok = n["ready"] + n["ready_with_tolerance"]
    if bad:
        rest = f"{ok} other configuration(s) pass under {rule_needed}." if ok and rule_needed else "none is ready."
        return f"Keep {len(bad)} configuration(s) off the network ({_ids(bad)}); {rest}"
    if n["ready_with_tolerance"]:
        return (
            f"Exact-hash validation (what the network uses today) would reject honest nodes for "
            f"{n['ready_with_tolerance']} of {len(a.configs)} configurations: validate with {rule_needed}, "
            f"or accept only the {n['ready']} bitwise-ready one(s)."
        )
    if n["ready"]:
        return f"All {n['ready']} tested configurations are bitwise reproducible: exact-hash validation is enough."
    return "Nothing could be compared: add repeats or worker processes so executions can be checked against each other."


def environment_line(env: dict[str, Any]) -> str:
    """CPU/GPU model, torch, transformers, CUDA and driver in one line."""
    libs = env.get("libraries") or {}
    cpu = f"{env.get('processor') or env.get('machine') or 'unknown CPU'}"
    if env.get("cpu_count"):
        cpu += f" ({env['cpu_count']} CPUs)"
    gpus = env.get("gpu_names") or []
    gpu = ", ".join(str(g) for g in gpus) if gpus else "no GPU"
    parts = [cpu, gpu]
    for name in ("torch", "transformers"):
        version = libs.get(name) or (env.get("torch") if name == "torch" else None)
        if version:
            parts.append(f"{name} {version}")
    if env.get("cuda_runtime"):
        parts.append(f"CUDA {env['cuda_runtime']}")
    if env.get("driver"):
        parts.append(f"driver {env['driver']}")
    if env.get("python"):
        parts.append(f"Python {env['python']}")
    return "; ".join(parts)


def summarize(a: Analysis, judged: Iterable[str] | None = None) -> RunSummary:
    """The run's summary from its analysed configurations (and ``a.warnings``)."""
    judged_dims = tuple(judged) if judged is not None else DEFAULT_JUDGED
    verdicts: dict[str, int] = {}
    for c in a.configs:
        verdicts[c.verdict] = verdicts.get(c.verdict, 0) + 1
    by_config = {c.config_id: rule_for(c, judged_dims) for c in a.configs}
    needed = [r for r in by_config.values() if r]
    rule_needed = max(needed, key=lambda r: RULE_STRENGTH.index(r) if r in RULE_STRENGTH else 0) if needed else None
    findings = _dimension_findings(a, judged_dims) + _upgrade_finding(a) + _other_findings(a)
    findings += _deciding_findings(a, findings) + _warning_finding(a.warnings)
    findings.sort(key=lambda f: (SEVERITY_ORDER.index(f.severity), -len(f.configs)))
    return RunSummary(
        headline=headline(a, rule_needed),
        verdicts=verdicts,
        rule_needed=rule_needed,
        rule_by_config=by_config,
        findings=findings,
        environment=environment_line(a.environment),
    )
