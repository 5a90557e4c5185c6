"""JUnit XML (``--junit FILE``): valid under the JUnit schema CI tools read, read back by a real
JUnit reader (junitparser) with the expected counts, failures that carry the verdict, its
reason, the first divergent step and the cell ids, skips with their reason, and a file that
fails exactly when the gate does."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.analysis.judgement import dimension_verdicts
from harness.analysis.model import Analysis, DimensionSummary, GateResult, PairResult
from harness.report.junit import (
    Case,
    Suite,
    failure_text,
    render,
    render_certificate,
    render_compare,
    render_run,
    run_suite,
    write_junit,
)
from tests.report.test_report import AUDIO, SKIPPED, TEXT, make_analysis

XSD = Path(__file__).parent.parent / "data" / "junit.xsd"


def check_junit(data: bytes | str | Path):
    """``data`` (XML bytes or a file) validated against tests/data/junit.xsd with two schema
    engines, then read by junitparser: returns its JUnitXml. Also checks what GitLab needs: no
    two testcases with the same classname and name (it keeps only the first)."""
    import xmlschema
    from junitparser import JUnitXml
    from lxml import etree

    raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else data
    xmlschema.XMLSchema(str(XSD)).validate(raw.decode("utf-8"))
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    doc = etree.fromstring(raw)
    assert schema.validate(doc), schema.error_log
    xml = JUnitXml.fromstring(raw)
    keys = [(case.classname, case.name) for suite in xml for case in suite]
    assert len(keys) == len(set(keys)), "duplicate testcases"
    return xml


def outcomes(xml) -> dict[tuple[str, str], tuple[str, str, str]]:
    """(classname, name) -> (outcome, message, text), outcome passed | failure | error | skipped."""
    out = {}
    for suite in xml:
        for case in suite:
            result = case.result[0] if case.result else None
            kind = type(result).__name__.lower() if result is not None else "passed"
            out[(case.classname, case.name)] = (
                kind,
                result.message if result is not None else "",
                (result.text or "") if result is not None else "",
            )
    return out


def analysis() -> Analysis:
    """The report's synthetic analysis, with the worst pairs' cells the analysis now records."""
    a = make_analysis()
    audio = a.configs[0]
    audio.dimensions["process"].worst_pair = ["c0-w0-r0", "c0-w1-r0"]
    audio.dimensions["batch"].worst_pair = ["c0-b1", "c0-b2"]
    audio.dimensions["repeat"].worst_pair = ["c0-w0-r0", "c0-w0-r1"]
    return a


def test_run_file_validates_and_counts() -> None:
    a = analysis()
    xml = check_junit(render_run(a, dimension_verdicts(a)))
    suites = list(xml)
    assert len(suites) == 1
    suite = suites[0]
    # 3 configurations x 3 judged dimensions the run compares (repeat, process, batch), + evidence
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (10, 3, 0, 4)
    got = outcomes(xml)
    m = "golden-matrix"
    assert got[(f"{m}.{TEXT}", "repeat")][0] == "passed" and got[(f"{m}.{TEXT}", "process")][0] == "passed"
    assert got[(f"{m}.{TEXT}", "batch")][:2] == ("skipped", "untested: nothing to compare in batch")
    assert {got[(f"{m}.{SKIPPED}", d)][:2] for d in ("repeat", "process", "batch")} == {
        ("skipped", "skipped: CUDA is not available")
    }
    assert got[(m, "evidence")][0] == "passed"
    kind, message, text = got[(f"{m}.{AUDIO}", "process")]
    assert kind == "failure" and message == "not_ready: process divergent (first divergent step 12)"
    # the verdict, its reason, the first divergent step and the cells, in the element text
    # (GitLab shows the text, not the message attribute)
    for needle in (
        "verdict: not_ready",
        "reason: diverges: process 1 of 2",
        "first divergent step: 12",
        "cells: c0-w0-r0 vs c0-w1-r0",
        "rel_l2=0.610",
    ):
        assert needle in text, (needle, text)
    kind, message, text = got[(f"{m}.{AUDIO}", "repeat")]  # tokens, but a finding: never passed
    assert kind == "failure" and "finding waveform_far_tokens_equal" in message and "beyond the composite rule" in text


def test_the_file_fails_exactly_when_the_gate_does() -> None:
    a = analysis()
    a.gate_rules = ["failed"]  # not_ready is reported, not gated
    a.gates[0] = GateResult(config_id=AUDIO, passed=True, reason=a.gates[0].reason)
    xml = check_junit(render_run(a, dimension_verdicts(a)))
    suite = next(iter(xml))
    assert (suite.failures, suite.errors) == (0, 0)
    out = next(iter(next(iter(xml))))  # the audio config's repeat case passed, saying why not judged
    assert "not gated" in (out.system_out or "")
    assert failure_text(a, AUDIO, dimension_verdicts(a)) is None


def test_failed_cells_are_errors_naming_them_and_the_evidence_gate_is_a_testcase() -> None:
    a = analysis()
    c = a.configs[1]
    c.verdict, c.reason = "failed", "1 cell(s) failed or timed out; first: gpt2/w0/r1: killed by signal 9"
    c.failures = ["gpt2/w0/r1: killed by signal 9"]
    a.gates[1] = GateResult(config_id=TEXT, passed=False, reason=f"failed: {c.reason}")
    a.gates.append(GateResult(config_id="evidence", passed=False, reason="1 evidence problem(s); first: x missing"))
    a.problems = ["x missing"]
    xml = check_junit(render_run(a, dimension_verdicts(a)))
    got = outcomes(xml)
    kind, message, text = got[(f"golden-matrix.{TEXT}", "repeat")]
    assert kind == "error" and message.startswith("failed: 1 cell(s)") and "gpt2/w0/r1: killed by signal 9" in text
    assert got[("golden-matrix", "evidence")][:2] == ("failure", "evidence: 1 evidence problem(s); first: x missing")
    suite = next(iter(xml))
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (
        10,
        4,
        3,
        3,
    )  # 3 dimensions of the failed configuration are errors
    assert "evidence: 1 evidence problem(s)" in failure_text(a, TEXT, dimension_verdicts(a))


def test_a_gate_no_dimension_explains_is_its_own_testcase() -> None:
    """seed_insensitive (and ready_with_tolerance in fail_on) fail the gate of a configuration
    whose dimensions all pass: the file still fails."""
    a = analysis()
    a.gate_rules = ["not_ready", "failed", "seed_insensitive"]
    a.gates[1] = GateResult(config_id=TEXT, passed=False, reason="ready: bitwise; seeds give identical outputs")
    got = outcomes(check_junit(render_run(a, dimension_verdicts(a))))
    assert got[(f"golden-matrix.{TEXT}", "gate")][:2] == (
        "failure",
        "gate failed: ready: bitwise; seeds give identical outputs",
    )
    b = analysis()
    tol = b.configs[1]
    tol.verdict, tol.reason = "ready_with_tolerance", "not bitwise; passes the named composite validator"
    tol.validator = {"rule": "composite", "false_accept": 0.0, "false_reject": 0.0, "pairs": 10, "source": "t"}
    tol.dimensions["repeat"] = DimensionSummary(
        pairs=2, levels={"tokens": 2}, worst="tokens", rejected={"composite": 0}, worst_pair=["g-r0", "g-r1"]
    )
    b.gates[1] = GateResult(config_id=TEXT, passed=False, reason=f"ready_with_tolerance: {tol.reason}")
    got = outcomes(check_junit(render_run(b, dimension_verdicts(b))))
    kind, message, text = got[(f"golden-matrix.{TEXT}", "repeat")]
    assert kind == "failure" and message == "ready_with_tolerance: repeat tokens" and "cells: g-r0 vs g-r1" in text
    assert got[(f"golden-matrix.{TEXT}", "process")][0] == "passed"  # bitwise: not to blame
    # a dimension that passes alone in a configuration failed by another one says so
    xml = check_junit(render_run(analysis(), dimension_verdicts(analysis())))
    audio_batch = next(c for s in xml for c in s if c.classname.endswith(AUDIO) and c.name == "batch")
    assert audio_batch.result  # divergent: to blame
    c = analysis()
    c.configs[0].dimensions["batch"] = DimensionSummary(pairs=1, levels={"bitwise": 1}, worst="bitwise")
    out = {
        case.name: case.system_out
        for s in check_junit(render_run(c, dimension_verdicts(c)))
        for case in s
        if case.classname.endswith(AUDIO)
    }
    assert "the not_ready verdict rests on the others" in out["batch"]


def test_a_run_comparing_nothing_still_has_a_testcase_per_configuration() -> None:
    a = analysis()
    for c in a.configs:
        c.dimensions = {}
        c.verdict, c.reason = (
            ("untested", "only one execution: nothing to compare") if c.verdict != "skipped" else (c.verdict, c.reason)
        )
    a.gates = [GateResult(config_id=c.config_id, passed=True, reason=c.reason) for c in a.configs]
    xml = check_junit(render_run(a, dimension_verdicts(a)))
    got = outcomes(xml)
    assert got[(f"golden-matrix.{AUDIO}", "verdict")][:2] == (
        "skipped",
        "untested: only one execution: nothing to compare",
    )
    assert next(iter(xml)).tests == 4


def test_text_that_xml_cannot_hold_is_replaced_and_long_text_cut() -> None:
    case = Case(
        classname="m.c",
        name="repeat",
        outcome="failure",
        type="not_ready",
        message="bad \x00\x1b[31m byte",
        text="x" * 50_000,
    )
    xml = check_junit(render([Suite(name="s", cases=[case])]))
    _kind, message, text = outcomes(xml)[("m.c", "repeat")]
    assert message == "bad ??[31m byte" and len(text) < 21_000 and text.endswith("more characters)")


def test_an_unwritable_target_is_refused_before_any_cell_runs(cli, tmp_path: Path) -> None:
    from tests.execution.test_matrix_runner import mini_matrix

    res = cli("run", str(mini_matrix(tmp_path)), "--out", str(tmp_path / "run"), "--junit", str(tmp_path))
    assert res.returncode == 2 and "refusing to write over a" in res.stderr, res.stderr
    assert not (tmp_path / "run").exists()


def test_written_atomically_and_a_folder_target_is_refused(tmp_path: Path) -> None:
    from harness.store.run import StoreError

    target = tmp_path / "reports" / "junit.xml"
    write_junit(target, render_run(analysis(), dimension_verdicts(analysis())))
    write_junit(target, render_run(analysis(), dimension_verdicts(analysis())))  # over the old one
    assert sorted(p.name for p in target.parent.iterdir()) == ["junit.xml"]  # no temporary file left
    check_junit(target)
    with pytest.raises(StoreError, match="refusing to write over a"):
        write_junit(tmp_path, b"<testsuites/>")


def _certificate(verdicts: dict[str, str], not_certified: list[str] = (), passed: bool | None = None):
    from harness.analysis.crossrun import RunSide
    from harness.workflows.certify import Certificate, ConfigCertificate

    configs = [
        ConfigCertificate(
            config_id=cid,
            task=cid.split("/")[0],
            kind="gpt",
            model="tiny:gpt2",
            verdict=v,
            reason={
                "pass": "bitwise identical in 2 cell(s)",
                "pass_with_tolerance": "not bitwise; worst level tokens; every pair passes",
                "fail": "divergent from the reference (divergent 2); first divergent step 3",
            }[v],
            compared=2,
            levels={"bitwise": 2} if v == "pass" else {"divergent": 2},
            worst="bitwise" if v == "pass" else "divergent",
            first_divergence=None if v == "pass" else 3,
            worst_pair=None if v == "pass" else [f"{cid}/r0", f"{cid}/r0"],
        )
        for cid, v in verdicts.items()
    ]
    side = {"source": "ref.zip", "run_id": "r1", "matrix": "cert"}
    return Certificate(
        harness_version="0.1.0",
        created_at=0.0,
        passed=all(v == "pass" for v in verdicts.values()) if passed is None else passed,
        summary="NOT CERTIFIED (bitwise): ...",
        reference=RunSide(label="reference", **side),
        candidate=RunSide(label="candidate", **{**side, "run_id": "r2"}),
        match="spec",
        thresholds={},
        configs=configs,
        not_certified=list(not_certified),
    )


def test_certificate_file_one_testcase_per_configuration() -> None:
    cert = _certificate(
        {
            "gpt/float32/qnone/cpu/pon": "pass",
            "mg/float32/qnone/cpu/pon": "pass_with_tolerance",
            "gpt/bfloat16/qnone/cpu/pon": "fail",
        },
        not_certified=["gpt/float16/qnone/cuda0/pon: skipped on the reference machine (no GPU)"],
    )
    xml = check_junit(render_certificate(cert))
    suite = next(iter(xml))
    assert (suite.tests, suite.failures, suite.errors, suite.skipped) == (4, 2, 0, 1)
    got = outcomes(xml)
    kind, message, text = got[("cert", "gpt/bfloat16/qnone/cpu/pon")]
    assert kind == "failure" and message.startswith("fail: divergent from the reference")
    assert "first divergent step: 3" in text and "gpt/bfloat16/qnone/cpu/pon/r0 (reference) vs" in text
    kind, message, _ = got[("cert", "mg/float32/qnone/cpu/pon")]
    assert kind == "failure" and "certification is bitwise" in message  # as the exit code: 1
    assert got[("cert", "gpt/float16/qnone/cuda0/pon")][:2] == (
        "skipped",
        "not certified: skipped on the reference machine (no GPU)",
    )
    broken = _certificate({"gpt/float32/qnone/cpu/pon": "pass"}, passed=False)
    got = outcomes(check_junit(render_certificate(broken)))
    assert got[("cert", "certificate")][0] == "failure"  # e.g. the candidate's evidence is broken


def test_compare_file_outputs_then_costs() -> None:
    from harness.analysis.bench import CostRow
    from harness.analysis.crossrun import ConfigOutcome, CrossRunResult, RunSide, SpecMatch

    a, b = "gpt/float32/qnone/cpu/pon", "gpt/bfloat16/qnone/cpu/pon"
    side = {"source": "A", "run_id": "ra", "matrix": "mini"}
    result = CrossRunResult(
        match="spec",
        thresholds={},
        a=RunSide(label="A", **side),
        b=RunSide(label="B", **{**side, "run_id": "rb"}),
        matches=[
            SpecMatch(
                key="k",
                task="gpt",
                kind="gpt",
                config_a=b,
                config_b=b,
                spec_a="s",
                spec_b="s",
                cell_a=f"{b}/w0/r0",
                cell_b=f"{b}/w0/r0",
                level="divergent",
                first_divergence=2,
            )
        ],
        configs=[
            ConfigOutcome(
                config_id=a, task="gpt", kind="gpt", model="m", matched=2, levels={"bitwise": 2}, worst="bitwise"
            ),
            ConfigOutcome(
                config_id=b,
                task="gpt",
                kind="gpt",
                model="m",
                matched=2,
                levels={"divergent": 2},
                worst="divergent",
                first_divergence=[2],
            ),
        ],
    )
    verdicts = {a: ("pass", "bitwise identical in 2 cell(s)"), b: ("fail", "divergent from the reference")}
    rows = [CostRow(key=a, mark="+", ratio=1.3, messages=["median 1.30x > 1.10x"]), CostRow(key=b, mark=" ")]
    got = outcomes(check_junit(render_compare(result, verdicts, rows, ["median:10%"])))
    assert got[("mini", a)][0] == "passed"
    kind, message, text = got[("mini", b)]
    assert kind == "failure" and "first divergent step 2" in message and f"cells: {b}/w0/r0 (A) vs" in text
    assert got[("mini", f"{a} costs")][:2] == ("failure", "median 1.30x > 1.10x")
    assert got[("mini", f"{b} costs")][0] == "passed"
    assert ("mini", f"{a} costs") not in outcomes(check_junit(render_compare(result, verdicts, rows)))  # no --check


def test_the_schema_refuses_what_ci_tools_refuse() -> None:
    """The schema is not a rubber stamp: a testcase without a name, a suite without counts,
    an unknown element."""
    import xmlschema

    schema = xmlschema.XMLSchema(str(XSD))
    good = render([Suite(name="s", cases=[Case(classname="c", name="n")])]).decode()
    assert schema.is_valid(good)
    for bad in (
        good.replace(' name="n"', ""),
        good.replace(' tests="1"', ""),
        good.replace("<testcase ", "<testcase><oops/></testcase><testcase ", 1),
    ):
        assert not schema.is_valid(bad), bad


def test_run_suite_order_is_stable() -> None:
    a = analysis()
    names = [(c.classname, c.name) for c in run_suite(a, dimension_verdicts(a)).cases]
    assert names == [(c.classname, c.name) for c in run_suite(a.model_copy(deep=True), dimension_verdicts(a)).cases]
    assert names[-1] == ("golden-matrix", "evidence")
    assert isinstance(a.examples[0], PairResult)
