"""Calibrations are policy (issue 29 item 1): refused when implausible, one line naming the
field; signed with Ed25519 over their digest and checked against trusted keys; an edited and
resealed file refused under trusted keys and labelled ``unsigned`` otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli.main import main
from harness.cli.trust import sign_calibration
from harness.spec.calibration import MAX_REPLAY_MARGIN, CalibrationError, CalibrationTrustError, parse_calibration
from harness.spec.matrix import MatrixError, load_matrix
from harness.spec.policy import Policy, Thresholds, config_policy
from harness.store.run import StoreError
from tests.spec.test_calibration import _matrix, calibration, doc_of, entry, facts, one_line


def _set(doc: dict, path: tuple, value) -> dict:
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _resealed(doc: dict) -> dict:
    """What a forger does: edit, then recompute the unkeyed digest."""
    from harness.spec.calibration import Calibration

    return Calibration.model_validate(doc).sealed().model_dump(mode="json")


E0 = ("entries", 0)


@pytest.mark.parametrize(
    "path, value, needle",
    [
        (E0 + ("waveform_max_abs",), 3.0, "$.entries.0.waveform_max_abs"),  # beyond a [-1, 1] signal's range
        (E0 + ("waveform_rel_l2",), 1e300, "$.entries.0.waveform_rel_l2"),
        (E0 + ("replay_margin",), 1e300, "$.entries.0.replay_margin"),
        (E0 + ("replay_margin",), MAX_REPLAY_MARGIN * 1.01, "$.entries.0.replay_margin"),
        (
            E0 + ("false_reject",),
            {"rate": 0.0, "low": 0.0, "high": 0.2, "errors": 16, "pairs": 16},
            "not errors / pairs",
        ),
        (
            E0 + ("false_reject",),
            {"rate": 0.0, "low": 0.5, "high": 0.1, "errors": 0, "pairs": 16},
            "low 0.5 > high 0.1",
        ),
        (
            E0 + ("false_reject",),
            {"rate": 1.0, "low": 0.8, "high": 1.0, "errors": 17, "pairs": 16},
            "errors 17 > pairs 16",
        ),
        (
            E0 + ("false_reject",),
            {"rate": 0.5, "low": 0.0, "high": 0.1, "errors": 8, "pairs": 16},
            "outside its interval",
        ),
        (E0 + ("false_reject", "pairs"), "100", "$.entries.0.false_reject.pairs"),
        (E0 + ("false_reject", "rate"), True, "$.entries.0.false_reject.rate"),
        (E0 + ("waveform_max_abs",), "1e-5", "$.entries.0.waveform_max_abs"),
        (("schema_version",), 0, "$.schema_version"),
        (("schema_version",), True, "$.schema_version"),
        (("schema_version",), "2", "$.schema_version"),
        (E0 + ("notes",), ["\ud800 lone"], "$.entries[0].notes[0]: not valid Unicode"),
    ],
)
def test_implausible_values_are_refused_naming_the_field(path, value, needle):
    doc = _resealed(doc_of(calibration(entry())))  # a consistent forgery: only plausibility can refuse it
    _set(doc, path, value)
    with pytest.raises(CalibrationError) as info:
        parse_calibration(doc, "cal.json")
    msg = one_line(info.value)
    assert msg.startswith("cal.json: ") and needle in msg, msg
    assert not isinstance(info.value, CalibrationTrustError)


def test_studies_write_plausible_rates():
    """The shipped calibration passes the checks it is now held to."""
    from harness.spec.calibration import load_calibration

    cal = load_calibration(Path(__file__).resolve().parents[2] / "docs" / "replay-calibration.json")
    assert all(e.replay_margin is not None and e.replay_margin <= MAX_REPLAY_MARGIN for e in cal.entries)


@pytest.fixture
def keys(tmp_path, capsys) -> tuple[Path, Path, Path]:
    assert main(["keygen", str(tmp_path / "op")]) == 0
    assert main(["keygen", str(tmp_path / "mallory")]) == 0
    capsys.readouterr()
    return tmp_path / "op.key", tmp_path / "op.pub", tmp_path / "mallory.key"


def _verify(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["verify", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_signed_calibration_verifies_and_a_resealed_edit_does_not(capsys, keys, tmp_path):
    key, pub, mallory = keys
    signed = sign_calibration(calibration(entry()), key)
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(signed.model_dump(mode="json")))
    code, out, _ = _verify(capsys, str(path), "--trusted-keys", str(pub))
    assert code == 0 and out.startswith(f"VERIFIED {path}: calibration, signed by ed25519:"), out
    # edit the margin's bound, recompute the digest, keep the signature: the signature fails
    doc = signed.model_dump(mode="json")
    doc["entries"][0]["waveform_max_abs"] = 1.0
    forged = _resealed(doc)
    forged["signature"] = signed.signature
    path.write_text(json.dumps(forged))
    code, out, _ = _verify(capsys, str(path), "--trusted-keys", str(pub))
    assert code == 1 and out.startswith("NOT VERIFIED") and "signature does not verify" in out, out
    code, out, _ = _verify(capsys, str(path))  # a signature present must hold, trusted keys or not
    assert code == 1 and "signature does not verify" in out
    # resealed without the signature: unsigned, refused under trusted keys, labelled otherwise
    forged.pop("signature")
    path.write_text(json.dumps(forged))
    code, out, _ = _verify(capsys, str(path), "--trusted-keys", str(pub))
    assert code == 1 and "unsigned, but trusted keys were given" in out, out
    code, out, _ = _verify(capsys, str(path))
    assert code == 0 and out.strip().endswith("calibration, unsigned"), out
    # re-signed by another key: not trusted
    path.write_text(
        json.dumps(sign_calibration(forged_cal := parse_calibration(forged, "x"), mallory).model_dump(mode="json"))
    )
    assert forged_cal.signature is None
    code, out, _ = _verify(capsys, str(path), "--trusted-keys", str(pub))
    assert code == 1 and "not in the trusted keys" in out, out
    # edited without resealing: the digest, NOT VERIFIED
    doc = signed.model_dump(mode="json")
    doc["entries"][0]["waveform_max_abs"] = 1.0
    path.write_text(json.dumps(doc))
    code, out, _ = _verify(capsys, str(path))
    assert code == 1 and "digest does not match" in out, out
    # implausible: bad input, one line
    doc["entries"][0]["waveform_max_abs"] = 5.0
    path.write_text(json.dumps(doc))
    code, out, err = _verify(capsys, str(path))
    assert code == 2 and "waveform_max_abs" in err and len(err.strip().splitlines()) == 1, err


def _signed_matrix(tmp_path: Path, cal_doc: dict, require: bool) -> Path:
    path = _matrix(tmp_path, cal_doc=cal_doc)
    if require:
        text = path.read_text().replace(
            'calibration = "calibrations/tiny.json"', 'calibration = "calibrations/tiny.json"\nrequire_signed = true'
        )
        assert "require_signed" in text
        path.write_text(text)
    return path


def test_matrix_checks_calibrations_against_trusted_keys(keys, tmp_path, monkeypatch):
    key, pub, mallory = keys
    monkeypatch.delenv("HARNESS_TRUSTED_KEYS", raising=False)
    signed = sign_calibration(calibration(entry()), key).model_dump(mode="json")
    unsigned = doc_of(calibration(entry()))
    # require_signed: trusted keys must be given, and the file signed by one
    with pytest.raises(MatrixError, match="require_signed, but no trusted keys were given"):
        load_matrix(_signed_matrix(tmp_path, signed, require=True))
    matrix = load_matrix(_signed_matrix(tmp_path, signed, require=True), pub)
    named = matrix.spec.validators["audio"]
    cp = config_policy(Policy(Thresholds(), matrix.spec.gates, matrix.spec.validators), facts())
    assert cp.validator is not None and cp.validator.signed_by.startswith("signed by ed25519:")
    assert "a trusted key, required by the matrix" in cp.validator.signed_by and named.require_signed
    with pytest.raises(MatrixError, match="unsigned, but trusted keys were given"):
        load_matrix(_signed_matrix(tmp_path, unsigned, require=True), pub)
    # trusted keys from the environment apply to any named calibration
    monkeypatch.setenv("HARNESS_TRUSTED_KEYS", str(pub))
    with pytest.raises(MatrixError, match="unsigned, but trusted keys were given"):
        load_matrix(_signed_matrix(tmp_path, unsigned, require=False))
    resigned = sign_calibration(calibration(entry(max_abs=1.0)), mallory).model_dump(mode="json")
    with pytest.raises(MatrixError, match="not in the trusted keys"):
        load_matrix(_signed_matrix(tmp_path, resigned, require=False))
    monkeypatch.delenv("HARNESS_TRUSTED_KEYS")
    # without trusted keys an unsigned calibration loads, labelled unsigned
    matrix = load_matrix(_signed_matrix(tmp_path, unsigned, require=False))
    cp = config_policy(Policy(Thresholds(), matrix.spec.gates, matrix.spec.validators), facts())
    assert cp.validator is not None and cp.validator.signed_by == "unsigned"


def test_a_manifest_claiming_require_signed_with_an_unsigned_calibration_is_refused():
    from harness.spec.policy import PolicyError, policy_of

    named = {"rule": "composite", "calibration": doc_of(calibration(entry())), "require_signed": True}
    with pytest.raises(PolicyError, match="require_signed, but the calibration is unsigned"):
        policy_of({"validators": {"audio": named}}, "manifest.json")


def test_a_calibration_from_another_release_decides_nothing():
    cal = calibration(entry())
    doc = doc_of(cal)
    doc["entries"][0]["scope"]["harness_version"] = "9.9.0"
    other = parse_calibration(_resealed(doc), "cal.json")
    from harness.spec.policy import NamedValidator

    named = NamedValidator(rule="composite", calibration=other, calibration_file="cal.json")
    cp = config_policy(Policy(Thresholds(), matrix_gates(), {"audio": named}), facts())
    assert cp.validator is None and "measured with harness 9.9.0" in (cp.out_of_scope or "")


def matrix_gates():
    from harness.spec.policy import Gates

    return Gates()


@pytest.mark.parametrize("value", ["100", "1e300"])
def test_a_matrix_replay_margin_above_the_ceiling_is_refused(tmp_path, value):
    path = tmp_path / "m.toml"
    path.write_text(f'[thresholds]\nreplay_margin = {value}\n\n[[tasks]]\nfile = "t.json"\n')
    with pytest.raises(MatrixError) as info:
        load_matrix(path)
    assert "replay_margin" in str(info.value) and "less than or equal to 1" in str(info.value)


def test_an_empty_signing_key_path_is_refused_by_name():
    # signing_key reads "" as "no key given"; signing with it used to fail on None, deep inside
    with pytest.raises(StoreError, match="no signing key: an empty key path"):
        sign_calibration(calibration(entry()), "")
