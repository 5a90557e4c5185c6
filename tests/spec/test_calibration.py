"""Calibration files, the validator a matrix names with one, the per-configuration policy, and
the judge that rests on them. Pure logic: calibrations are built in code, no model runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from harness import __version__
from harness.analysis.model import DimensionSummary
from harness.analysis.run import judge
from harness.compare.levels import WAVEFORM_FINDING
from harness.spec.calibration import (
    CALIBRATION_SCHEMA_VERSION,
    Calibration,
    CalibrationError,
    Entry,
    Facts,
    Rate,
    Scope,
    load_calibration,
    parse_calibration,
    resolve,
)
from harness.spec.matrix import MatrixError, load_matrix
from harness.spec.policy import (
    ConfigPolicy,
    Gates,
    NamedValidator,
    Policy,
    PolicyError,
    Thresholds,
    config_policy,
    policy_of,
)

ROOT = Path(__file__).resolve().parents[2]
TASK = ROOT / "matrices" / "tasks" / "tiny-gpt2-chatbot.json"
KC_AVX512 = "aten-avx512/onednn-avx512_bf16"
KC_AVX2 = "aten-avx2/onednn-avx2"
WEIGHTS = "ab" * 32
NOTE = "threads left out: the study's thread pairs were bitwise, so no bound was measured on them"


def rate(r: float = 0.0, pairs: int = 100) -> Rate:
    return Rate(rate=r, low=0.0, high=max(r, 0.03), errors=round(r * pairs), pairs=pairs)


def entry(
    dtype="float32",
    bits=None,
    sources=("repeat", "process", "threads"),
    kernels=(KC_AVX512, KC_AVX2),
    tokens=(8, 64),
    weights=WEIGHTS,
    max_abs=2.5e-5,
    rel_l2=3.5e-4,
    fa=0.0,
    fr=0.02,
    notes=(),
    kind="audio",
    model="tiny:musicgen",
) -> Entry:
    scope = Scope(
        kind=kind,
        model=model,
        weights_sha256=weights,
        dtype=dtype,
        quantize_bits=bits,
        new_tokens=tokens,
        sources=list(sources),
        kernel_classes=list(kernels),
        harness_version=__version__,
    )
    return Entry(
        scope=scope,
        waveform_max_abs=max_abs,
        waveform_rel_l2=rel_l2,
        false_reject=rate(fr, 50),
        false_accept=rate(fa, 200),
        notes=list(notes),
    )


def calibration(*entries: Entry) -> Calibration:
    return Calibration(made_by="test study, 200 pairs", entries=list(entries or [entry()])).sealed()


def facts(**over) -> Facts:
    base = {
        "kind": "audio",
        "model": "tiny:musicgen",
        "dtype": "float32",
        "quantize_bits": None,
        "weights_sha256": WEIGHTS,
        "new_tokens": 32,
        "kernel_classes": frozenset({KC_AVX512}),
    }
    return Facts(**{**base, **over})


def doc_of(cal: Calibration) -> dict:
    return json.loads(json.dumps(cal.model_dump(mode="json")))


def one_line(err: BaseException) -> str:
    msg = str(err)
    assert len(msg.splitlines()) == 1, msg
    return msg


# -- the file format -------------------------------------------------------------------------


def test_sealed_digest_is_the_content_digest():
    cal = calibration()
    assert cal.digest and cal.digest == cal.content_digest()
    assert Calibration(made_by="x", entries=[entry()]).digest == ""


def test_parse_accepts_a_sealed_document():
    cal = calibration(entry(), entry(dtype="bfloat16"))
    back = parse_calibration(doc_of(cal), "cal.json")
    assert back == cal
    assert back.entries[0].scope.new_tokens == (8, 64)


def test_unsealed_document_refused():
    doc = doc_of(Calibration(made_by="x", entries=[entry()]))
    with pytest.raises(CalibrationError, match="digest"):
        parse_calibration(doc, "cal.json")


@pytest.mark.parametrize(
    "path, value",
    [
        (("entries", 0, "waveform_max_abs"), 1.0),
        (("entries", 0, "waveform_rel_l2"), 0.5),
        (("entries", 0, "false_accept", "high"), 0.5),
        (("entries", 0, "false_reject", "high"), 0.7),
        (("entries", 0, "scope", "dtype"), "bfloat16"),
        (("entries", 0, "scope", "new_tokens"), [1, 10_000]),
        (("entries", 0, "scope", "sources"), ["repeat", "process", "threads", "isa"]),
        (("entries", 0, "scope", "kernel_classes"), ["aten-default/onednn-sse41"]),
        (("entries", 0, "notes"), ["edited"]),
        (("made_by",), "someone else"),
    ],
)
def test_tampering_any_value_is_refused_naming_digest(path, value):
    doc = doc_of(calibration())
    target = doc
    for key in path[:-1]:
        target = target[key]
    assert target[path[-1]] != value
    target[path[-1]] = value
    with pytest.raises(CalibrationError) as info:
        parse_calibration(doc, "cal.json")
    msg = one_line(info.value)
    assert "digest" in msg and "cal.json" in msg


@settings(max_examples=40)
@given(st.floats(min_value=0, max_value=1, allow_nan=False).filter(lambda x: x != 2.5e-5))
def test_tampering_the_waveform_bound_is_always_caught(value):
    doc = doc_of(calibration())
    doc["entries"][0]["waveform_max_abs"] = value
    with pytest.raises(CalibrationError, match="digest"):
        parse_calibration(doc, "cal.json")


def test_newer_schema_version_refused():
    doc = doc_of(calibration())
    doc["schema_version"] = CALIBRATION_SCHEMA_VERSION + 1
    with pytest.raises(CalibrationError) as info:
        parse_calibration(doc, "cal.json")
    msg = one_line(info.value)
    assert "newer" in msg and str(CALIBRATION_SCHEMA_VERSION + 1) in msg


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("entries", 0, "waveform_max_abs"), "big", "entries.0.waveform_max_abs"),
        (("entries", 0, "waveform_max_abs"), -1.0, "entries.0.waveform_max_abs"),
        (("entries", 0, "false_accept", "rate"), 1.5, "entries.0.false_accept.rate"),
        (("entries", 0, "scope", "sources"), ["cosmic-ray"], "entries.0.scope.sources"),
        (("entries", 0, "scope", "new_tokens"), "8-64", "entries.0.scope.new_tokens"),
        (("rule",), "tokens", "rule"),
        (("entries",), [], "entries"),
        (("made_by",), None, "made_by"),
    ],
)
def test_wrong_type_names_the_field(path, value, field):
    doc = doc_of(calibration())
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(CalibrationError) as info:
        parse_calibration(doc, "cal.json")
    msg = one_line(info.value)
    assert f"$.{field}" in msg and "cal.json" in msg


def test_unknown_field_refused():
    doc = doc_of(calibration())
    doc["entries"][0]["scope"]["extra"] = 1
    with pytest.raises(CalibrationError, match=r"\$\.entries\.0\.scope\.extra"):
        parse_calibration(doc, "cal.json")


@pytest.mark.parametrize("doc", [[], "x", 1, None])
def test_not_an_object_refused(doc):
    with pytest.raises(CalibrationError, match="JSON object"):
        parse_calibration(doc, "cal.json")


# -- load_calibration ------------------------------------------------------------------------


def test_load_round_trip(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(doc_of(calibration())))
    assert load_calibration(path) == calibration()


def test_load_missing_file(tmp_path):
    with pytest.raises(CalibrationError) as info:
        load_calibration(tmp_path / "nope.json")
    msg = one_line(info.value)
    assert "nope.json" in msg and "cannot read" in msg


def test_load_directory(tmp_path):
    with pytest.raises(CalibrationError, match="cannot read"):
        load_calibration(tmp_path)


@pytest.mark.parametrize("raw", [b"{", b"", b"\xff\xfe", b'{"a": NaN}', b'{"a": 1, "a": 2}', b"[1,]"])
def test_load_invalid_json(tmp_path, raw):
    path = tmp_path / "cal.json"
    path.write_bytes(raw)
    with pytest.raises(CalibrationError) as info:
        load_calibration(path)
    msg = one_line(info.value)
    assert "cal.json" in msg


def test_load_nul_in_path(tmp_path):
    with pytest.raises(CalibrationError) as info:
        load_calibration(str(tmp_path / "a\0b.json"))
    assert "cannot read" in one_line(info.value)


def test_load_tampered_file(tmp_path):
    doc = doc_of(calibration())
    doc["entries"][0]["waveform_max_abs"] = 1.0
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(CalibrationError, match="digest"):
        load_calibration(path)


# -- resolve ---------------------------------------------------------------------------------


def test_resolve_in_scope_gives_the_entry():
    cal = calibration(entry(), entry(dtype="bfloat16", max_abs=9e-4))
    got, why = resolve(cal, facts())
    assert why is None and got == cal.entries[0]
    got, why = resolve(cal, facts(dtype="bfloat16"))
    assert why is None and got.waveform_max_abs == 9e-4


def test_resolve_other_dtype():
    got, why = resolve(calibration(), facts(dtype="bfloat16"))
    assert got is None
    assert why == "no calibrated validator for audio tiny:musicgen bfloat16 (calibrated: float32)"


def test_resolve_other_quantization_lists_the_calibrated():
    cal = calibration(entry(), entry(bits=8))
    got, why = resolve(cal, facts(quantize_bits=4))
    assert got is None
    assert why == "no calibrated validator for audio tiny:musicgen float32 4-bit (calibrated: float32, float32 8-bit)"


def test_resolve_unknown_model_and_kind():
    assert resolve(calibration(), facts(model="tiny:other")) == (None, "no calibrated validator for audio tiny:other")
    assert resolve(calibration(), facts(kind="gpt")) == (None, "no calibrated validator for gpt tiny:musicgen")


def test_resolve_other_weights():
    got, why = resolve(calibration(), facts(weights_sha256="cd" * 32))
    assert got is None and "other weights" in why and WEIGHTS[:12] in why and ("cd" * 6) in why


def test_resolve_unknown_weights_on_either_side_are_not_a_mismatch():
    assert resolve(calibration(), facts(weights_sha256=None))[1] is None
    assert resolve(calibration(entry(weights=None)), facts())[1] is None


@pytest.mark.parametrize("n, inside", [(7, False), (8, True), (64, True), (65, False), (None, True)])
def test_resolve_token_range(n, inside):
    got, why = resolve(calibration(), facts(new_tokens=n))
    assert (why is None) == inside
    if not inside:
        assert got is None and f"max_new_tokens {n} is outside" in why and "8-64" in why


def test_resolve_kernel_class_outside():
    got, why = resolve(calibration(entry(kernels=(KC_AVX512,))), facts(kernel_classes=frozenset({KC_AVX512, KC_AVX2})))
    assert got is None
    assert why == f"kernel class {KC_AVX2} is outside the calibration (calibrated: {KC_AVX512})"


def test_resolve_source_not_calibrated_carries_the_notes():
    cal = calibration(entry(sources=("repeat", "process"), notes=(NOTE,)))
    got, why = resolve(cal, facts(sources=frozenset({"threads", "repeat"})))
    assert got is None and "honest source threads was not calibrated" in why and NOTE in why


@settings(max_examples=40)
@given(n=st.integers(0, 200), lo=st.integers(0, 100), span=st.integers(0, 100))
def test_resolve_token_range_property(n, lo, span):
    cal = calibration(entry(tokens=(lo, lo + span)))
    got, why = resolve(cal, facts(new_tokens=n))
    assert (got is not None) == (lo <= n <= lo + span) == (why is None)


# -- NamedValidator --------------------------------------------------------------------------


def test_validator_needs_rates_or_calibration():
    with pytest.raises(ValidationError, match="false_accept and false_reject, or a calibration"):
        NamedValidator(rule="composite")
    with pytest.raises(ValidationError):
        NamedValidator(rule="composite", false_accept=0.0)
    v = NamedValidator(rule="composite", false_accept=0.0, false_reject=0.1)
    assert not v.calibrated


def test_validator_with_sealed_calibration():
    v = NamedValidator(rule="composite", calibration=calibration(), calibration_file="cal.json")
    assert v.calibration.digest == calibration().digest and not v.calibrated


def test_validator_with_tampered_embedded_calibration_refused():
    cal = calibration()
    bad = cal.model_copy(update={"entries": [entry(max_abs=1.0)]})  # digest of the original kept
    with pytest.raises(ValidationError, match="digest"):
        NamedValidator(rule="composite", calibration=bad, calibration_file="cal.json")
    doc = doc_of(cal)
    doc["entries"][0]["waveform_rel_l2"] = 0.9
    with pytest.raises(ValidationError, match="digest"):
        NamedValidator.model_validate({"rule": "composite", "calibration": doc})


def test_validator_rule_mismatch_refused():
    with pytest.raises(ValidationError, match="composite rule, not tokens"):
        NamedValidator(rule="tokens", calibration=calibration())


# -- config_policy ---------------------------------------------------------------------------


def _policy(cal: Calibration | None = None, **validator) -> Policy:
    v = (
        NamedValidator(rule="composite", calibration=cal, calibration_file="calibrations/tiny.json")
        if cal is not None
        else NamedValidator(rule="composite", **validator)
    )
    return Policy(thresholds=Thresholds(), gates=Gates(), validators={"audio": v})


def test_config_policy_inside_scope():
    e = entry(fa=0.005, fr=0.02, notes=(NOTE,))
    cp = config_policy(_policy(calibration(e)), facts())
    v = cp.validator
    assert cp.out_of_scope is None and v is not None and v.calibrated
    assert v.false_accept == 0.005 and v.false_reject == 0.02
    assert v.pairs == 250 and v.source == "test study, 200 pairs"
    assert v.sources == ["repeat", "process", "threads"] and v.notes == [NOTE]
    assert v.calibration is None and v.calibration_file == "calibrations/tiny.json"
    assert cp.thresholds.waveform_max_abs == 2.5e-5 and cp.thresholds.waveform_rel_l2 == 3.5e-4
    assert cp.thresholds.rel_l2_max == Thresholds().rel_l2_max  # the other bars are the matrix's
    for word in ("repeat", "process", "threads", "calibrations/tiny.json", "honest"):
        assert word in cp.bounds_from


def test_config_policy_outside_scope():
    policy = _policy(calibration())
    cp = config_policy(policy, facts(dtype="bfloat16"))
    assert cp.validator is None
    assert cp.out_of_scope == "no calibrated validator for audio tiny:musicgen bfloat16 (calibrated: float32)"
    assert cp.thresholds == policy.thresholds
    assert "[thresholds]" in cp.bounds_from and "calibrations" not in cp.bounds_from


def test_config_policy_without_calibration_keeps_the_hand_rates():
    policy = _policy(false_accept=0.001, false_reject=0.1)
    cp = config_policy(policy, facts())
    assert cp.validator is policy.validators["audio"] and cp.out_of_scope is None
    assert cp.thresholds == policy.thresholds and not cp.validator.calibrated
    assert "waveform bounds the matrix gives" in cp.bounds_from


def test_config_policy_other_kind_has_no_validator():
    cp = config_policy(_policy(calibration()), facts(kind="gpt"))
    assert cp.validator is None and cp.out_of_scope is None


# -- the matrix names a calibration file -----------------------------------------------------

MATRIX = """\
name = "cal-test"
repeats = 1
workers = 1

[[tasks]]
name = "gpt"
file = "task.json"

[validators.audio]
rule = "composite"
calibration = "{cal}"
"""


def _matrix(tmp_path: Path, cal_name: str = "calibrations/tiny.json", cal_doc: dict | None = None) -> Path:
    shutil.copy(TASK, tmp_path / "task.json")
    if cal_doc is not None:
        (tmp_path / cal_name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / cal_name).write_text(json.dumps(cal_doc))
    path = tmp_path / "m.toml"
    path.write_text(MATRIX.format(cal=cal_name))
    return path


def test_matrix_embeds_the_calibration(tmp_path):
    cal = calibration()
    matrix = load_matrix(_matrix(tmp_path, cal_doc=doc_of(cal)))
    v = matrix.spec.validators["audio"]
    assert v.calibration == cal and v.calibration_file == "calibrations/tiny.json"
    dumped = matrix.to_doc()["spec"]["validators"]["audio"]
    assert dumped["calibration"]["digest"] == cal.digest
    assert dumped["calibration"]["entries"][0]["waveform_max_abs"] == 2.5e-5
    assert dumped["calibration_file"] == "calibrations/tiny.json"
    # the manifest's copy judges the run: it reads back with the calibration intact
    policy = policy_of(matrix.to_doc()["spec"], "manifest.json")
    assert policy.validators["audio"].calibration == cal
    cp = config_policy(policy, facts())
    assert cp.validator.calibrated and "calibrations/tiny.json" in cp.bounds_from


def test_manifest_with_edited_embedded_calibration_refused(tmp_path):
    matrix = load_matrix(_matrix(tmp_path, cal_doc=doc_of(calibration())))
    spec = matrix.to_doc()["spec"]
    spec["validators"]["audio"]["calibration"]["entries"][0]["waveform_max_abs"] = 1.0
    with pytest.raises(PolicyError) as info:
        policy_of(spec, "manifest.json")
    msg = one_line(info.value)
    assert "matrix.spec.validators.audio" in msg and "digest" in msg


def test_matrix_missing_calibration_file(tmp_path):
    with pytest.raises(MatrixError) as info:
        load_matrix(_matrix(tmp_path, cal_name="nope.json"))
    msg = one_line(info.value)
    assert "$.validators.audio.calibration" in msg and "nope.json" in msg and "m.toml" in msg


def test_matrix_tampered_calibration_file(tmp_path):
    doc = doc_of(calibration())
    doc["entries"][0]["false_accept"]["high"] = 0.5
    with pytest.raises(MatrixError) as info:
        load_matrix(_matrix(tmp_path, cal_doc=doc))
    msg = one_line(info.value)
    assert "$.validators.audio.calibration" in msg and "digest" in msg


def test_matrix_invalid_json_calibration_file(tmp_path):
    (tmp_path / "cal.json").write_text("{not json")
    with pytest.raises(MatrixError) as info:
        load_matrix(_matrix(tmp_path, cal_name="cal.json"))
    assert "$.validators.audio.calibration" in one_line(info.value)


def test_matrix_calibration_for_another_rule_refused(tmp_path):
    path = _matrix(tmp_path, cal_doc=doc_of(calibration()))
    path.write_text(path.read_text().replace('rule = "composite"', 'rule = "tokens"'))
    with pytest.raises(MatrixError, match="validators"):
        load_matrix(path)


# -- the judge -------------------------------------------------------------------------------


def dim(
    worst: str, pairs: int = 4, rejected: int | None = 0, findings: dict | None = None, steps: list[int] | None = None
) -> DimensionSummary:
    return DimensionSummary(
        pairs=pairs,
        levels={worst: pairs},
        worst=worst,
        rejected={} if rejected is None else {"composite": rejected},
        findings=findings or {},
        finding_steps=steps or [],
    )


def test_judge_out_of_scope_is_not_ready_with_the_reason():
    cp = config_policy(_policy(calibration()), facts(dtype="bfloat16"))
    j = judge({"repeat": dim("bitwise"), "threads": dim("tokens")}, cp)
    assert j.verdict == "not_ready"
    assert cp.out_of_scope in j.reason and "tokens" in j.reason
    assert j.decided_by == ("threads",)


def test_judge_uncalibrated_source_is_not_ready_with_the_notes():
    cal = calibration(entry(sources=("repeat", "process"), notes=(NOTE,)))
    cp = config_policy(_policy(cal), facts())
    assert cp.out_of_scope is None  # the config is in scope; the source is not
    j = judge({"repeat": dim("tokens"), "threads": dim("tokens")}, cp)
    assert j.verdict == "not_ready"
    assert "honest source threads was not calibrated" in j.reason
    assert "(calibrated: repeat, process)" in j.reason and NOTE in j.reason
    assert j.decided_by == ("threads",)


def test_judge_bitwise_dimension_need_not_be_calibrated():
    cal = calibration(entry(sources=("repeat",)))
    cp = config_policy(_policy(cal), facts())
    j = judge({"repeat": dim("tokens"), "threads": dim("bitwise")}, cp)
    assert j.verdict == "ready_with_tolerance"


def test_judge_in_scope_and_nothing_rejected_is_ready_with_tolerance():
    cp = config_policy(_policy(calibration(entry(fa=0.005, fr=0.02))), facts())
    j = judge({"repeat": dim("bitwise"), "process": dim("tokens"), "threads": dim("tokens")}, cp)
    assert j.verdict == "ready_with_tolerance"
    assert "composite" in j.reason and "0.005" in j.reason and "0.020" in j.reason
    assert j.decided_by == ()


def test_judge_rejected_pairs_are_not_ready():
    cp = config_policy(_policy(calibration()), facts())
    j = judge({"repeat": dim("tokens"), "threads": dim("tokens", rejected=2)}, cp)
    assert j.verdict == "not_ready" and "rejects pairs (threads: 2)" in j.reason and j.decided_by == ("threads",)


def test_judge_calibrated_false_accept_above_limit():
    cp = config_policy(_policy(calibration(entry(fa=0.05))), facts())
    j = judge({"threads": dim("tokens")}, cp)
    assert j.verdict == "not_ready" and "false accept 0.050" in j.reason


def test_judge_waveform_finding_is_suspicious_in_the_bounds_words():
    cp = config_policy(_policy(calibration()), facts())
    j = judge({"repeat": dim("bitwise"), "threads": dim("tokens", findings={WAVEFORM_FINDING: 1}, steps=[17])}, cp)
    assert j.verdict == "not_ready"
    assert j.reason.startswith("suspicious across threads")
    assert cp.bounds_from in j.reason and "calibrations/tiny.json" in j.reason
    assert "first divergent step 17" in j.reason and j.decided_by == ("threads",)


def test_judge_waveform_finding_without_calibration_names_the_matrix_bounds():
    cp = config_policy(_policy(false_accept=0.0, false_reject=0.0), facts())
    j = judge({"threads": dim("tokens", findings={WAVEFORM_FINDING: 2})}, cp)
    assert j.verdict == "not_ready" and "suspicious" in j.reason
    assert "[thresholds] waveform_max_abs" in j.reason


def test_judge_no_validator_only_bitwise_passes():
    cp = ConfigPolicy(None, Thresholds())
    assert judge({"threads": dim("bitwise")}, cp).verdict == "ready"
    j = judge({"threads": dim("tokens")}, cp)
    assert j.verdict == "not_ready" and "names no validator" in j.reason


@settings(max_examples=40)
@given(
    levels=st.lists(st.sampled_from(["bitwise", "tokens", "tolerance"]), min_size=1, max_size=4), scoped=st.booleans()
)
def test_judge_out_of_scope_never_passes_a_non_bitwise_config(levels, scoped):
    dims = {f"d{i}": dim(lv) for i, lv in enumerate(levels)}
    cp = config_policy(
        _policy(calibration(entry(sources=("repeat",)))), facts(dtype="float32" if scoped else "float16")
    )
    j = judge(dims, cp)
    if all(lv == "bitwise" for lv in levels):
        assert j.verdict == "ready"
    else:
        assert j.verdict == "not_ready"  # out of scope, or the d* sources were never calibrated
        assert set(j.decided_by) == {d for d, s in dims.items() if s.worst != "bitwise"}


def test_several_entries_for_one_configuration_the_first_whose_scope_holds_decides():
    """Entries measured on other machines (a Zen 4 study, a Sapphire Rapids one) calibrate the
    same configuration: each decides only where its own scope holds."""
    amx = "aten-avx512/onednn-amx"
    zen4 = entry(kernels=(KC_AVX512, KC_AVX2), max_abs=1e-6)
    spr = entry(kernels=(amx, KC_AVX2), max_abs=3e-6)
    cal = calibration(zen4, spr)
    assert resolve(cal, facts(kernel_classes=frozenset({KC_AVX512, KC_AVX2}))) == (zen4, None)
    assert resolve(cal, facts(kernel_classes=frozenset({amx, KC_AVX2}))) == (spr, None)
    got, why = resolve(cal, facts(kernel_classes=frozenset({"aten-default/onednn-sse41"})))
    assert got is None and why is not None
    assert why.startswith("kernel class aten-default/onednn-sse41 is outside the calibration")
    assert why.endswith("(and the 1 other entry for this configuration do not hold it either)")
    # one entry: its reason alone, as before
    assert resolve(calibration(zen4), facts(kernel_classes=frozenset({amx})))[1] == (
        f"kernel class {amx} is outside the calibration (calibrated: {KC_AVX512}, {KC_AVX2})"
    )


def test_the_shipped_calibrations_cover_the_cpu_kinds_they_were_measured_on():
    """The shipped files hold the Zen 4 study's entries first and the Sapphire Rapids entries
    (AMX) after them: a Zen 4, a Zen 3 and a Sapphire Rapids each resolve an entry."""
    root = Path(__file__).resolve().parents[2]
    shipped = load_calibration(root / "matrices" / "calibrations" / "tiny-musicgen.json")
    machines = {
        "zen4": {"aten-avx512/onednn-avx512_bf16", "aten-avx2/onednn-avx2"},
        "zen3": {"aten-avx2/onednn-avx2", "aten-default/onednn-sse41"},
        "sapphire rapids": {"aten-avx512/onednn-amx", "aten-avx2/onednn-avx2"},
    }
    for scope in shipped.entries[:3]:
        for name, classes in machines.items():
            f = facts(
                dtype=scope.scope.dtype,
                quantize_bits=scope.scope.quantize_bits,
                weights_sha256=scope.scope.weights_sha256,
                new_tokens=64,
                kernel_classes=frozenset(classes),
                sources=frozenset({"threads"}),
            )
            got, why = resolve(shipped, f)
            assert got is not None, (name, why)
            assert (got is scope) == (name != "sapphire rapids"), name
