"""JUnit XML: a run's, a certificate's or a comparison's verdicts as CI systems read test results.

Why JUnit: GitLab (``artifacts:reports:junit``), Jenkins (junit / xUnit plugins) and GitHub
Actions' test-report actions all read this one format, so a determinism gate shows up as test
results in a merge request, not only as an exit code and a line on stderr.

What becomes a testcase (rendering decides nothing: every status below is read from verdicts
and gates the analysis or the certificate already decided):

- ``harness run`` / ``report``: one testcase per configuration x judged dimension (the
  matrix's ``gates.verdict_dimensions`` that the run compares at all), classname
  ``<matrix>.<config id>``, name the dimension. It fails (``<failure type="not_ready">``) only
  when the configuration's gate failed and this dimension alone would not pass (its level,
  findings or the named validator's refusal), with the verdict, its reason, the level, the first
  divergent step and the cell ids of the worst pair; a configuration whose cells crashed is an
  ``<error type="failed">`` naming them; a skipped configuration, or a dimension with nothing to
  compare, is ``<skipped>`` with the reason. A failed gate that no dimension explains (e.g.
  ``seed_insensitive``) is a ``gate`` testcase, and the run's evidence gate is one ``evidence``
  testcase: the file fails exactly when ``harness run`` exits 1.
- ``harness certify``: one testcase per certified configuration (classname the reference's
  matrix, name the config id), failing unless ``pass`` (certification is bitwise, as its exit
  code); configurations not certified are skipped with their reason.
- ``harness compare``: one testcase per compared configuration of A, failing when B does not
  reproduce it (the certification rule: ``fail``); with ``--check``, one costs testcase per
  configuration failing as the exit code does.

The layout follows the Jenkins xUnit plugin's ``junit-10.xsd`` (``tests/data/junit.xsd``
states the same rules); GitLab reads a testcase's classname as its suite and the element text
(not the ``message`` attribute) as the failure, so both carry the reason. Written atomically.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.analysis.certificate import Certificate
from harness.analysis.crossrun import CrossRunResult, SpecMatch
from harness.analysis.model import Analysis, ConfigResult, DimensionSummary, PairResult
from harness.analysis.summary import ordered_dimensions
from harness.store.files import atomic_write_bytes
from harness.vocabulary import ACCEPTED, DEFAULT_JUDGED, DIMENSIONS, LEVEL_DIFFERED, LEVEL_MEANING, MAP_MEANING

Outcome = Literal["passed", "failure", "error", "skipped"]
#: characters XML 1.0 cannot hold (a library's error text may carry them)
_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
MAX_TEXT = 20_000  # per element: the report has the rest
MAX_CELLS = 10

#: (configuration, dimension) -> (verdict, reason) that dimension alone gets, decided by the analysis
Decisions = Mapping[tuple[str, str], tuple[str, str]]


@dataclass
class Case:
    """One testcase: what CI shows as one test."""

    classname: str
    name: str
    outcome: Outcome = "passed"
    message: str = ""  # the one line (failure/error/skipped ``message``)
    type: str = ""  # the verdict (failure/error ``type``)
    text: str = ""  # the full explanation (element text)
    out: str = ""  # system-out: what a passing case saw
    time: float = 0.0


@dataclass
class Suite:
    name: str
    cases: list[Case] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)
    out: str = ""

    def count(self, outcome: Outcome) -> int:
        return sum(1 for c in self.cases if c.outcome == outcome)


# --- what a dimension says, in the report's words (shared with the pytest plugin) ---------------


def _cells(ids: Sequence[str]) -> str:
    shown = list(ids[:MAX_CELLS])
    more = f" and {len(ids) - MAX_CELLS} more" if len(ids) > MAX_CELLS else ""
    return ", ".join(shown) + more


def example_of(a: Analysis, config_id: str, dimension: str) -> PairResult | None:
    """The configuration's worst pair (the report plots it) when it lies in ``dimension``."""
    return next((p for p in a.examples if p.config_id == config_id and p.dimension == dimension), None)


def dimension_lines(c: ConfigResult, dim: str, s: DimensionSummary, example: PairResult | None = None) -> list[str]:
    """Level, pair counts, first divergent step, what differed and the cells of the worst pair."""
    from harness.compare.levels import FINDING_TEXT

    phrase = DIMENSIONS[dim].phrase if dim in DIMENSIONS else f"the {dim} dimension changes"
    levels = ", ".join(f"{k} {v}" for k, v in s.levels.items())
    lines = [
        f"{dim}: {s.worst} ({LEVEL_MEANING.get(s.worst or '', s.worst)}) when {phrase}; {s.pairs} pair(s): {levels}"
    ]
    if s.first_divergence:
        lines.append(f"first divergent step: {min(s.first_divergence)}")
    for finding, n in s.findings.items():
        lines.append(f"finding: {FINDING_TEXT.get(finding, finding)} ({n} pair(s))")
    if s.stages:
        lines.append("divergence began in the " + ", ".join(f"{k} stage ({v})" for k, v in s.stages.items()))
    validator = (c.validator or {}).get("rule")
    if validator and s.rejected.get(validator):
        lines.append(f"the named {validator} validator rejects {s.rejected[validator]} pair(s)")
    what = LEVEL_DIFFERED.get(s.worst or "")
    if what:
        step = f" from step {min(s.first_divergence)}" if s.first_divergence and s.worst == "divergent" else ""
        lines.append(f"what differed: {what.format(step=step)}")
    if example is not None and example.metrics:
        from harness.report.certificate import fmt_metrics

        metrics = fmt_metrics(example.metrics)
        if metrics:
            lines.append(f"worst pair: {metrics}")
    if s.worst_pair:
        lines.append(f"cells: {s.worst_pair[0]} vs {s.worst_pair[1]}")
    if s.not_compared:
        lines.append(f"not compared: {s.not_compared} pair(s), {s.not_compared_reason}")
    return lines


# --- harness run / report -------------------------------------------------------------------------


def judged_dimensions(a: Analysis) -> list[str]:
    """The judged dimensions the run compares at all (pairs in some configuration)."""
    judged = ordered_dimensions(a.verdict_dimensions or DEFAULT_JUDGED)
    carried = {d for c in a.configs for d, s in c.dimensions.items() if s.pairs or s.not_compared}
    return [d for d in judged if d in carried]


def _config_cases(
    a: Analysis, c: ConfigResult, dims: list[str], gate_failed: bool, gate_reason: str, decisions: Decisions
) -> list[Case]:
    classname = f"{a.matrix}.{c.config_id}"
    cases: list[Case] = []
    head = [f"configuration: {c.config_id}", f"verdict: {c.verdict}", f"reason: {c.reason}"]
    for dim in dims or ["verdict"]:
        case = Case(classname=classname, name=dim)
        cases.append(case)
        s = c.dimensions.get(dim)
        if c.verdict == "skipped":
            case.outcome, case.message, case.text = "skipped", f"skipped: {c.reason}", "\n".join(head)
            continue
        if c.verdict == "failed":
            text = "\n".join(head + ["cells:", *(f"  {f}" for f in c.failures)])
            if gate_failed:
                case.outcome, case.type, case.message, case.text = "error", "failed", f"failed: {c.reason}", text
            else:
                case.outcome, case.message, case.text = "skipped", f"failed, not gated: {c.reason}", text
            continue
        if s is None or not s.pairs:
            why = f"untested: {MAP_MEANING['untested']} in {dim}" if dim != "verdict" else f"{c.verdict}: {c.reason}"
            if s is not None and s.not_compared:
                why = f"untested: {dim}: {s.not_compared_reason} ({s.not_compared} pair(s))"
            case.outcome, case.message, case.text = "skipped", why, "\n".join(head)
            continue
        lines = dimension_lines(c, dim, s, example_of(a, c.config_id, dim))
        alone, _ = decisions[(c.config_id, dim)]
        to_blame = alone not in ACCEPTED or (c.verdict == "ready_with_tolerance" and alone == "ready_with_tolerance")
        if gate_failed and to_blame:
            step = f" (first divergent step {min(s.first_divergence)})" if s.first_divergence else ""
            case.outcome, case.type = "failure", c.verdict
            found = f"; finding {', '.join(s.findings)}" if s.findings else ""
            case.message = f"{c.verdict}: {dim} {s.worst}{step}{found}"
            case.text = "\n".join(head + lines + [f"gate: {gate_reason}"])
        else:
            note = ""
            if c.verdict not in ACCEPTED:  # passed: this dimension is not why, or the verdict is not gated
                note = (
                    f"\n(this dimension alone: {alone}; the {c.verdict} verdict rests on the others)"
                    if gate_failed
                    else f"\n(verdict {c.verdict}, not gated: fail_on is {', '.join(a.gate_rules)})"
                )
            case.out = "\n".join(lines) + note
    if gate_failed and not any(x.outcome in ("failure", "error") for x in cases):
        cases.append(
            Case(
                classname=classname,
                name="gate",
                outcome="failure",
                type=c.verdict,
                message=f"gate failed: {gate_reason}",
                text="\n".join(head + [f"gate: {gate_reason}"]),
            )
        )
    return cases


def config_cases(a: Analysis, config_id: str, decisions: Decisions) -> list[Case]:
    """One configuration's testcases (its judged dimensions, and ``gate`` when needed)."""
    gates = {g.config_id: g for g in a.gates}
    c = next(x for x in a.configs if x.config_id == config_id)
    g = gates.get(config_id)
    return _config_cases(a, c, judged_dimensions(a), bool(g and not g.passed), g.reason if g else "", decisions)


def failure_text(a: Analysis, config_id: str, decisions: Decisions) -> str | None:
    """Why a configuration's gate failed, in the report's words (None when it passed): the
    gate's reason, then level, first divergent step, what differed and the cells of each
    dimension to blame, then the evidence gate when it failed too."""
    gates = {g.config_id: g for g in a.gates}
    g, evidence = gates.get(config_id), gates.get("evidence")
    failed = [x for x in config_cases(a, config_id, decisions) if x.outcome in ("failure", "error")]
    lines: list[str] = []
    if g is not None and not g.passed:
        lines.append(f"{config_id}: {g.reason}")
        for case in failed:
            body = [
                line
                for line in case.text.splitlines()
                if not line.startswith(("configuration:", "verdict:", "reason:", "gate:"))
            ]
            lines += [f"  {line}" for line in body]
    if evidence is not None and not evidence.passed:
        lines.append(f"evidence: {evidence.reason}")
    return "\n".join(lines) if lines else None


def run_suite(a: Analysis, decisions: Decisions) -> Suite:
    """The run's testcases: configurations x judged dimensions, failed gates, the evidence gate."""
    gates = {g.config_id: g for g in a.gates}
    dims = judged_dimensions(a)
    suite = Suite(
        name=f"harness run {a.matrix}", properties=_run_properties(a, dims), out=a.summary.headline if a.summary else ""
    )
    for c in a.configs:
        g = gates.get(c.config_id)
        suite.cases += _config_cases(a, c, dims, bool(g and not g.passed), g.reason if g else "", decisions)
    evidence = gates.get("evidence")
    case = Case(classname=a.matrix, name="evidence")
    if evidence is not None and not evidence.passed:
        case.outcome, case.type, case.message = "failure", "evidence", f"evidence: {evidence.reason}"
        case.text = "\n".join([case.message, *a.problems[:50]])
    else:
        ev = a.evidence or {}
        case.out = ", ".join(f"{k} {v}" for k, v in sorted(ev.items()) if isinstance(v, (int, float, str, bool)))
    suite.cases.append(case)
    return suite


def _run_properties(a: Analysis, dims: list[str]) -> dict[str, str]:
    props = {
        "run_id": a.run_id,
        "matrix": a.matrix,
        "harness_version": a.harness_version or "",
        "judged_dimensions": ",".join(dims),
        "fail_on": ",".join(a.gate_rules),
        "records": str(a.records),
    }
    if a.summary:
        props["environment"] = a.summary.environment
        props["verdicts"] = ", ".join(f"{k} {v}" for k, v in sorted(a.summary.verdicts.items()))
    return props


def render_run(a: Analysis, decisions: Decisions) -> bytes:
    """``decisions``: each judged dimension's verdict alone, from the analysis
    (harness.analysis.judgement.dimension_verdicts); the writer decides nothing."""
    return render([run_suite(a, decisions)], name=f"harness {a.matrix}")


# --- harness certify ------------------------------------------------------------------------------


def certificate_suite(cert: Certificate) -> Suite:
    matrix = cert.reference.matrix
    suite = Suite(
        name=f"harness certify {matrix}",
        out=cert.summary,
        properties={
            "reference": cert.reference.source,
            "reference_run_id": cert.reference.run_id,
            "candidate_run_id": cert.candidate.run_id,
            "match": cert.match,
            "harness_version": cert.harness_version,
            "passed": str(cert.passed).lower(),
        },
    )
    for c in cert.configs:
        case = Case(classname=matrix, name=c.config_id)
        lines = [
            f"verdict: {c.verdict}",
            f"reason: {c.reason}",
            f"levels: {', '.join(f'{k} {v}' for k, v in c.levels.items()) or '-'} (worst {c.worst})",
        ]
        if c.first_divergence is not None:
            lines.append(f"first divergent step: {c.first_divergence}")
        if c.worst_pair:
            lines.append(f"cells: {c.worst_pair[0]} (reference) vs {c.worst_pair[1]} (candidate)")
        lines += [f"issue: {x}" for x in c.issues[:20]]
        if c.verdict == "pass":
            case.out = "\n".join(lines)
        else:
            step = f" (first divergent step {c.first_divergence})" if c.first_divergence is not None else ""
            why = "" if c.verdict == "fail" else " (certification is bitwise: harness certify exits 1)"
            case.outcome, case.type, case.message = "failure", c.verdict, f"{c.verdict}: {c.reason}{step}{why}"
            case.text = "\n".join(lines)
        suite.cases.append(case)
    for line in cert.not_certified:
        config_id, _, why = line.partition(": ")
        suite.cases.append(
            Case(classname=matrix, name=config_id, outcome="skipped", message=f"not certified: {why or line}")
        )
    if not cert.passed and all(c.verdict == "pass" for c in cert.configs):
        # no configuration compared, or the candidate's own evidence is broken
        suite.cases.append(
            Case(
                classname=matrix,
                name="certificate",
                outcome="failure",
                type="not_certified",
                message=cert.summary,
                text="\n".join([cert.summary, *cert.problems[:50]]),
            )
        )
    return suite


def render_certificate(cert: Certificate) -> bytes:
    return render([certificate_suite(cert)], name=f"harness certify {cert.reference.matrix}")


# --- harness compare ------------------------------------------------------------------------------


def compare_suite(
    result: CrossRunResult,
    verdicts: dict[str, tuple[str, str]],
    cost_rows: Sequence[Any] | None = None,
    checks: Sequence[str] = (),
) -> Suite:
    """``verdicts``: config id -> (pass | pass_with_tolerance | fail, reason), as certification
    judges B against A; ``cost_rows``: CostRow objects of the cost comparison (with ``checks``)."""
    matrix = result.a.matrix
    suite = Suite(
        name=f"harness compare {result.a.run_id} {result.b.run_id}",
        properties={
            "a": result.a.source,
            "b": result.b.source,
            "a_run_id": result.a.run_id,
            "b_run_id": result.b.run_id,
            "match": result.match,
            "environment_differs": ",".join(result.environment_differs),
        },
    )
    for out in result.configs:
        verdict, reason = verdicts.get(out.config_id, ("fail", "not judged"))
        case = Case(classname=matrix, name=out.config_id)
        lines = [
            f"verdict: {verdict}",
            f"reason: {reason}",
            f"levels: {', '.join(f'{k} {v}' for k, v in out.levels.items()) or '-'} (worst {out.worst})",
        ]
        if out.first_divergence:
            lines.append(f"first divergent step: {out.first_divergence[0]}")
        worst = _worst_match(result, out.config_id)
        if worst is not None:
            lines.append(f"cells: {worst.cell_a} (A) vs {worst.cell_b} (B)")
            if worst.axes_differ:
                lines.append("axes differ: " + ", ".join(f"{k} {v[0]} vs {v[1]}" for k, v in worst.axes_differ.items()))
        for what, ids in (
            ("no partner in B", out.unmatched_a),
            ("failed in A", out.failed_a),
            ("failed in B", out.failed_b),
            ("skipped in B", out.skipped_b),
            ("not comparable", out.errors),
        ):
            if ids:
                lines.append(f"{what}: {_cells(ids)}")
        if verdict == "fail":
            step = f" (first divergent step {out.first_divergence[0]})" if out.first_divergence else ""
            case.outcome, case.type, case.message, case.text = (
                "failure",
                verdict,
                f"{verdict}: {reason}{step}",
                "\n".join(lines),
            )
        else:
            case.out = "\n".join(lines)
        suite.cases.append(case)
    if checks:
        for row in cost_rows or []:
            case = Case(classname=matrix, name=f"{row.key} costs")
            messages = list(getattr(row, "messages", []) or [])
            newly_failing = getattr(row, "mark", "") == "!"
            text = "\n".join(
                [
                    f"mark: {getattr(row, 'mark', '').strip() or '-'}",
                    *messages,
                    *([f"note: {row.note}"] if getattr(row, "note", None) else []),
                ]
            )
            if messages or newly_failing:
                case.outcome, case.type = "failure", "regressed" if messages else "newly_failing"
                case.message = "; ".join(messages) or "newly failing"
                case.text = text
            else:
                case.out = text
            suite.cases.append(case)
    return suite


def _worst_match(result: CrossRunResult, config_id: str) -> SpecMatch | None:
    from harness.compare.levels import level_rank

    pairs = [m for m in result.matches if m.config_a == config_id and m.level]
    return max(pairs, key=lambda m: (level_rank(m.level or "bitwise"), -(m.first_divergence or 0)), default=None)


def render_compare(
    result: CrossRunResult,
    verdicts: dict[str, tuple[str, str]],
    cost_rows: Sequence[Any] | None = None,
    checks: Sequence[str] = (),
) -> bytes:
    return render([compare_suite(result, verdicts, cost_rows, checks)], name="harness compare")


# --- XML ------------------------------------------------------------------------------------------


def _clean(text: Any, limit: int = MAX_TEXT) -> str:
    clean: str = _INVALID.sub("?", str(text))
    return clean if len(clean) <= limit else clean[:limit] + f"... ({len(clean) - limit} more characters)"


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}"


def render(suites: Iterable[Suite], name: str = "harness") -> bytes:
    """``<testsuites>`` of the given suites, UTF-8 with an XML declaration."""
    suites = list(suites)
    root = ET.Element("testsuites", {"name": _clean(name, 500)})
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    time_total = 0.0
    for suite in suites:
        counts = {
            "tests": len(suite.cases),
            "failures": suite.count("failure"),
            "errors": suite.count("error"),
            "skipped": suite.count("skipped"),
        }
        seconds = sum(c.time for c in suite.cases)
        time_total += seconds
        for k, v in counts.items():
            totals[k] += v
        el = ET.SubElement(
            root,
            "testsuite",
            {"name": _clean(suite.name, 500), **{k: str(v) for k, v in counts.items()}, "time": _seconds(seconds)},
        )
        if suite.properties:
            props = ET.SubElement(el, "properties")
            for key, value in suite.properties.items():
                ET.SubElement(props, "property", {"name": _clean(key, 200), "value": _clean(value, 2000)})
        for case in suite.cases:
            tc = ET.SubElement(
                el,
                "testcase",
                {"classname": _clean(case.classname, 500), "name": _clean(case.name, 500), "time": _seconds(case.time)},
            )
            if case.outcome != "passed":
                attrs = {"message": _clean(case.message, 2000)}
                if case.type and case.outcome != "skipped":
                    attrs["type"] = _clean(case.type, 200)
                child = ET.SubElement(tc, case.outcome, attrs)
                child.text = _clean(case.text or case.message)
            if case.out:
                ET.SubElement(tc, "system-out").text = _clean(case.out)
        if suite.out:
            ET.SubElement(el, "system-out").text = _clean(suite.out)
    root.attrib.update({k: str(v) for k, v in totals.items() if k != "skipped"})
    root.set("time", _seconds(time_total))
    ET.indent(root)
    xml: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return xml + b"\n"


def write_junit(path: str | Path, data: bytes) -> Path:
    """Write a JUnit file atomically (the old file or the new one, never half of each)."""
    path = Path(path)
    atomic_write_bytes(path, data)
    return path
