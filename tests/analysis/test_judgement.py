"""The one judgement as certification uses it: a cross-run outcome judged by the same ladder as a
run's dimensions, with the across-machines comparison standing for the isa source when the two
sides ran other kernel classes."""

from __future__ import annotations

from harness.analysis.crossrun import ACROSS, ConfigOutcome, CrossRunResult, RunSide, SpecMatch, judge_outcome
from harness.analysis.judgement import judge
from harness.compare.levels import WAVEFORM_FINDING, Thresholds
from harness.spec.policy import ConfigPolicy, NamedValidator
from harness.workflows.certify import judge as certify_judge

CONFIG = "musicgen/float32/qnone/cpu/pon"
COMPOSITE = {
    "rule": "composite",
    "false_accept": 0.0,
    "false_reject": 0.0,
    "pairs": 16,
    "sources": ["repeat", "process", "threads"],
    "calibration_file": "cal.json",
}


def _side(label: str) -> RunSide:
    return RunSide(label=label, source=label, run_id=label, matrix="m", environment={}, records=2)


def _result(
    level: str,
    *,
    within_b: str | None = None,
    rules: dict | None = None,
    finding: str | None = None,
    finding_in: str | None = None,
) -> CrossRunResult:
    m = SpecMatch(
        key="k",
        task="musicgen",
        kind="audio",
        config_a=CONFIG,
        config_b=CONFIG,
        spec_a="s",
        spec_b="s",
        cell_a="a/cell",
        cell_b="b/cell",
        level=level,
        first_divergence=None if level == "bitwise" else 3,
        within_b=within_b,
        within_b_rules={"composite": True} if within_b else {},
        rules=rules if rules is not None else {"composite": True},
        finding=finding,
        finding_in=finding_in,
    )
    return CrossRunResult(
        match="spec", thresholds=Thresholds().model_dump(), a=_side("reference"), b=_side("candidate"), matches=[m]
    )


def _outcome(classes: tuple[str, str] = ("avx512", "avx512"), validator: dict | None = COMPOSITE) -> ConfigOutcome:
    return ConfigOutcome(
        config_id=CONFIG,
        task="musicgen",
        kind="audio",
        model="tiny",
        matched=1,
        validator=validator,
        kernel_classes={"reference": [classes[0]], "candidate": [classes[1]]},
    )


def test_bitwise_passes_and_names_the_comparisons() -> None:
    j = judge_outcome(_outcome(), _result("bitwise", within_b="bitwise"))
    assert j.verdict == "ready" and j.reason == f"bitwise identical across {ACROSS}, candidate repeats"
    assert certify_judge(_outcome(), _result("bitwise"))[0] == "pass"


def test_tokens_pass_through_the_validator_on_the_same_kernels() -> None:
    verdict, reason, issues = certify_judge(_outcome(), _result("tokens"))
    assert verdict == "pass_with_tolerance" and "passes the named composite validator" in reason and not issues


def test_other_kernel_classes_need_the_isa_source() -> None:
    j = judge_outcome(_outcome(("avx512", "avx2")), _result("tokens"))
    assert j.verdict == "not_ready" and j.decided_by == (ACROSS,)
    assert "honest source isa was not calibrated" in j.reason and "calibrated: repeat, process, threads" in j.reason
    calibrated = {**COMPOSITE, "sources": [*COMPOSITE["sources"], "isa"]}
    assert judge_outcome(_outcome(("avx512", "avx2"), calibrated), _result("tokens")).verdict == "ready_with_tolerance"


def test_a_rejected_pair_or_no_validator_fails() -> None:
    assert certify_judge(_outcome(), _result("tokens", rules={"composite": False}))[0] == "fail"
    verdict, reason, _ = certify_judge(_outcome(validator=None), _result("tokens"))
    assert verdict == "fail" and "names no validator" in reason


def test_a_finding_is_counted_where_it_was_drawn() -> None:
    j = judge_outcome(_outcome(), _result("bitwise", within_b="tokens", finding=WAVEFORM_FINDING, finding_in="b"))
    assert j.verdict == "not_ready" and j.decided_by == ("candidate repeats",) and j.reason.startswith("suspicious")


def test_failed_cells_fail_before_any_comparison() -> None:
    out = _outcome().model_copy(update={"failed_b": ["b/cell: failed: boom"]})
    verdict, reason, issues = certify_judge(out, _result("bitwise"))
    assert (
        verdict == "fail"
        and reason.startswith("1 cell(s) not certified")
        and issues == ["failed here: b/cell: failed: boom"]
    )


def test_the_run_analysis_reads_the_same_ladder() -> None:
    """The same comparisons judged as a run's dimensions give the same verdict and reason (the
    sides ran the same kernels: no comparison stands for a calibrated source)."""
    from harness.analysis.crossrun import outcome_comparisons

    result = _result("tokens", rules={"composite": False})
    compared = outcome_comparisons(_outcome(), result)
    cp = ConfigPolicy(NamedValidator.model_validate(COMPOSITE), Thresholds())
    assert judge(compared, cp, {ACROSS: None}) == judge_outcome(_outcome(), result)
    assert "rejects pairs (machines: 1)" in judge(compared, cp, {ACROSS: None}).reason
