"""The one judgement: a configuration's verdict from the comparisons that should agree.

Why one module: the run analysis, the fleet's per-class figures and hardware certification
used to hold a ladder each (findings, bitwise, divergent, validator, calibration scope, false
accept, rejected pairs), and the two drifted (certify read kernel classes, the analysis read
the calibrated sources). Every caller now hands ``judge`` its comparisons as
``DimensionSummary``s, named by what varied, and the configuration's ``ConfigPolicy``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from harness.analysis.model import DimensionSummary, PairResult
from harness.compare.levels import (
    FINDING_TEXT,
    MAX_FALSE_ACCEPT,
    WAVEFORM_FINDING,
    level_rank,
    waveform_finding_text,
    worst_level,
)
from harness.spec.calibration import uncalibrated_sources
from harness.spec.policy import ConfigPolicy
from harness.vocabulary import MAP_MEANING

if TYPE_CHECKING:
    from harness.analysis.model import Analysis


def summarize_pairs(pairs: list[PairResult]) -> DimensionSummary:
    """What a set of pairs that should agree shows: levels, worst pair, divergent steps, findings,
    the pairs each rule rejects and the explained divergences (what ``judge`` reads)."""
    levels: dict[str, int] = defaultdict(int)
    stages: dict[str, int] = defaultdict(int)
    findings: dict[str, int] = defaultdict(int)
    rejected: dict[str, int] = defaultdict(int)
    explained: dict[str, int] = defaultdict(int)
    steps, finding_steps = [], []
    worst: PairResult | None = None
    worst_explained = None
    for p in pairs:
        if (p.finding or p.level != "bitwise") and (worst is None or _badness(p) > _badness(worst)):
            worst = p
        if p.explanation and p.explanation.get("cls"):
            explained[p.explanation["cls"]] += 1
            if worst_explained is None or _explanation_rank(p.explanation) > _explanation_rank(worst_explained):
                worst_explained = p.explanation
        levels[p.level] += 1
        for rule, ok in p.rules.items():
            rejected[rule] += not ok
        if p.finding:
            findings[p.finding] += 1
            if p.first_divergence is not None:
                finding_steps.append(p.first_divergence)
        if p.first_divergence is not None and p.level != "bitwise":
            steps.append(p.first_divergence)
        if p.stage:
            stages[p.stage] += 1
    return DimensionSummary(
        pairs=len(pairs),
        levels=dict(sorted(levels.items(), key=lambda kv: level_rank(kv[0]))),
        worst=worst_level(p.level for p in pairs) if pairs else None,
        first_divergence=steps,
        stages=dict(sorted(stages.items())),
        findings=dict(sorted(findings.items())),
        finding_steps=sorted(finding_steps),
        rejected=dict(sorted(rejected.items())),
        worst_pair=[worst.a, worst.b] if worst else [],
        explained=dict(sorted(explained.items())),
        explanation=worst_explained.get("sentence") if worst_explained else None,
        changed=sorted({c for p in pairs for c in p.changed})[:20],
    )


def _badness(p: PairResult) -> tuple[bool, int, float]:
    """A finding first, then the weakest level, then the earliest divergence."""
    return (
        p.finding is not None,
        level_rank(p.level),
        -p.first_divergence if p.first_divergence is not None else float("-inf"),
    )


def _explanation_rank(e: dict[str, Any]) -> tuple[bool, float]:
    """Suspicious before benign, then the larger gap."""
    gaps = [g if g is not None else float("inf") for g in (e.get("gap_a"), e.get("gap_b"))]
    return (e.get("cls") == "suspicious", max(abs(g) for g in gaps))


class Judgement(NamedTuple):
    """A verdict, its reason, and the judged dimensions whose pairs decided it (marked on the
    verdict map and named among the findings that matter)."""

    verdict: str
    reason: str
    decided_by: tuple[str, ...] = ()


def judge_configuration(
    counts: dict[str, int],
    dims: dict[str, DimensionSummary],
    failures: list[str],
    skipped_reason: str | None,
    verdict_dims: list[str],
    cp: ConfigPolicy,
) -> Judgement:
    """A run's configuration: skipped or failed from its cells' statuses, else ``judge`` over the
    judged dimensions (the others are named in the reason, reported and not judged)."""
    if counts.get("ok", 0) == 0 and not (counts.get("failed") or counts.get("timeout")):
        return Judgement("skipped", skipped_reason or "no cell ran")
    if counts.get("failed") or counts.get("timeout"):
        n = counts.get("failed", 0) + counts.get("timeout", 0)
        return Judgement("failed", f"{n} cell(s) failed or timed out; first: {failures[0] if failures else '?'}")
    compared = {d: s for d, s in dims.items() if s.pairs and d in verdict_dims}
    # pairs set aside as no comparison (one kernel class twice) count as nothing: named, never agreement
    aside = [
        f"{d}: untested ({s.not_compared_reason})"
        if not s.pairs
        else f"{d}: {s.not_compared} more pair(s) not compared ({s.not_compared_reason})"
        for d, s in dims.items()
        if s.not_compared
    ]
    info = "; ".join(
        [
            *(
                f"{d}: {s.worst} (reported, not judged)"
                for d, s in dims.items()
                if s.pairs and d not in verdict_dims and s.worst != "bitwise"
            ),
            *aside,
        ]
    )
    if not compared and any(s.not_compared for s in dims.values()):
        return Judgement("untested", info)
    j = judge(compared, cp)
    return j._replace(reason=j.reason + (f"; {info}" if info else ""))


def _changed(compared: Mapping[str, DimensionSummary], dims: Iterable[str]) -> str:
    """What differed in software between the sides of these dimensions' pairs (a stack's libraries)."""
    changed = sorted({c for d in dims for c in compared[d].changed})
    return f"; what differed: {', '.join(changed)}" if changed else ""


def judge(
    compared: Mapping[str, DimensionSummary], cp: ConfigPolicy, sources: Mapping[str, str | None] | None = None
) -> Judgement:
    """The verdict over the judged dimensions. Findings first (a suspicious pair is never
    passed), then bitwise -> ready, divergent -> not_ready; anything between passes only
    through the validator the matrix names, when its measured false accept is <= 1%, its
    calibration (if any) covers this configuration and every non-bitwise judged dimension,
    and it accepts every judged pair.

    ``sources``: the honest source each comparison stands for, where its name is not one (a
    certificate's "machines" comparison is the ``isa`` source when the sides ran other kernel
    classes; None: no calibrated source is needed for it). By default a dimension is its own."""
    if not compared:
        return Judgement("untested", f"only one execution: {MAP_MEANING['untested']}")
    worst = worst_level(s.worst for s in compared.values() if s.worst)
    where = ", ".join(f"{d}: {s.worst}" for d, s in compared.items())
    found = sorted({f for s in compared.values() for f in s.findings})
    if found:
        dims = [d for d, s in compared.items() if s.findings]
        steps = sorted({x for d in dims for x in compared[d].finding_steps})
        at = f" (first divergent step {steps[0]})" if steps else ""
        what = "; ".join(
            waveform_finding_text(cp.bounds_from) if f == WAVEFORM_FINDING else FINDING_TEXT.get(f, f) for f in found
        )
        label = "suspicious" if WAVEFORM_FINDING in found else "finding"
        return Judgement("not_ready", f"{label} across {', '.join(dims)}: {what}{at} ({where})", tuple(dims))
    if worst == "bitwise":
        return Judgement("ready", f"bitwise identical across {', '.join(compared)}")
    validator = cp.validator
    if worst == "divergent" and (validator is None or validator.rule != "replay"):
        bad = [d for d, s in compared.items() if s.worst == "divergent"]
        steps = sorted({x for d in bad for x in compared[d].first_divergence})
        at = f"; first divergent step {steps[0]}" if steps else ""
        began = sorted({st for d in bad for st in compared[d].stages})
        at += f"; divergence began in the {' and '.join(began)} stage" if began else ""
        at += _changed(compared, bad)
        return Judgement("not_ready", f"divergent across {', '.join(bad)}{at} ({where})", tuple(bad))
    base = f"not bitwise; worst level {worst} ({where})" + _changed(compared, compared)
    loose = tuple(d for d, s in compared.items() if s.worst != "bitwise")
    if cp.out_of_scope:
        return Judgement("not_ready", f"{base}; {cp.out_of_scope}", loose)
    if validator is None:
        return Judgement(
            "not_ready", f"{base}; the matrix names no validator for this kind, so only bitwise passes", loose
        )
    if validator.sources is not None:
        needed = {d: (sources or {}).get(d, d) for d, s in compared.items() if s.worst != "bitwise"}
        uncovered = [d for d, src in needed.items() if src is not None and src not in validator.sources]
        if uncovered:
            missing = list(dict.fromkeys(str(needed[d]) for d in uncovered))
            why = uncalibrated_sources(missing, validator.sources, validator.notes)
            return Judgement("not_ready", f"{base}; {why}", tuple(uncovered))
    fa, fr = validator.false_accept or 0.0, validator.false_reject or 0.0
    if fa > MAX_FALSE_ACCEPT:
        return Judgement(
            "not_ready",
            f"{base}; the named {validator.rule} validator's measured false accept "
            f"{fa:.3f} is above {MAX_FALSE_ACCEPT:.2f}",
            loose,
        )
    rejected = {d: s.rejected.get(validator.rule) for d, s in compared.items()}
    if any(n is None for n in rejected.values()):
        return Judgement(
            "not_ready",
            f"{base}; the {validator.rule} validator does not apply",
            tuple(d for d, n in rejected.items() if n is None),
        )
    if any(rejected.values()):
        rejecting = ", ".join(f"{d}: {n}" for d, n in rejected.items() if n)
        return Judgement(
            "not_ready",
            f"{base}; the named {validator.rule} validator rejects pairs ({rejecting})",
            tuple(d for d, n in rejected.items() if n),
        )
    benign = sum(s.explained.get("benign", 0) for s in compared.values())
    why = f"; {benign} divergence(s) explained as benign near-ties" if benign else ""
    return Judgement(
        "ready_with_tolerance",
        f"{base}; every judged pair passes the named {validator.rule} "
        f"validator (measured false accept {fa:.3f}, false reject {fr:.3f}){why}",
    )


def dimension_verdicts(a: Analysis) -> dict[tuple[str, str], tuple[str, str]]:
    """(configuration, dimension) -> the verdict and reason that dimension alone would get, by
    the one judgement: a configuration that is not accepted has at least one dimension that is
    not either. JUnit names the dimensions to blame from these (a renderer decides nothing)."""
    from harness.compare.levels import NamedValidator, Thresholds

    out: dict[tuple[str, str], tuple[str, str]] = {}
    for c in a.configs:
        validator = NamedValidator.model_validate(c.validator) if c.validator else None
        thresholds = Thresholds.model_validate(c.thresholds) if c.thresholds else Thresholds()
        policy = ConfigPolicy(validator, thresholds, c.out_of_scope)
        for dim, s in c.dimensions.items():
            if s.pairs:
                verdict, reason, _ = judge({dim: s}, policy)
                out[(c.config_id, dim)] = (verdict, reason)
    return out
