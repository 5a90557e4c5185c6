"""Trust (issue #15): receipts, signatures, the evidence check that gates, and safe outputs.

One real tiny run (GPT-2, 2 cells) is made once; every test edits a copy of it the way a
hostile operator would and checks the harness notices, by name. ``TRIED`` counts the hostile
edits; the total is printed at the end of the module.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import print_through_capture
from harness.analysis.evidence import gather as check_evidence
from harness.cli.main import main
from harness.store.bundle import BUNDLE_JSON, _append_trailer, _zipinfo, verify_bundle
from harness.store.receipts import LINKS
from harness.store.run import RunStore, StoreError
from tests.execution.test_matrix_runner import mini_matrix

TRIED: Counter = Counter()
SEEN: Counter = Counter()  # outcomes observed, not assumed: tracebacks, unsafe writes, forgeries accepted


@pytest.fixture(scope="module", autouse=True)
def _report_count(request):
    yield
    print_through_capture(
        request,
        f"trust: hostile edits tried {sum(TRIED.values())} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(TRIED.items()))}); "
        f"tracebacks {SEEN['traceback']}, unsafe writes {SEEN['unsafe write']}, "
        f"broken evidence passing a gate {SEEN['gate passed']}",
    )


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, tiny_gpt2) -> Path:
    from conftest import run_cli

    base = tmp_path_factory.mktemp("trust")
    matrix = mini_matrix(base, repeats=2, workers=1, axes={"seed": [1], "threads": [1], "batch_size": [1]})
    done = run_cli("run", str(matrix), "--out", str(base / "run"), "--no-progress", "--formats", "json")
    assert done.returncode == 0, done.stderr
    return base / "run"


@pytest.fixture
def run(good_run, tmp_path) -> Path:
    dest = tmp_path / "run"
    shutil.copytree(good_run, dest, ignore=shutil.ignore_patterns(".lock", "report.*"))
    return dest


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    SEEN["traceback"] += "Traceback" in err
    assert "Traceback" not in err, err
    return code, out, err


def _lines(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]


def _write(run: Path, records: list[dict]) -> None:
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def _evidence(run: Path):
    store = RunStore(run)
    loaded = store.load_records()
    return check_evidence(store, store.manifest(), loaded.records, loaded.problems)


def _edit_manifest(run: Path, fn) -> None:
    doc = json.loads((run / "manifest.json").read_text())
    fn(doc)
    (run / "manifest.json").write_text(json.dumps(doc))


# --- receipts ------------------------------------------------------------------------------------


def test_a_genuine_run_verifies_with_a_receipt_on_every_record(capsys, run):
    ev = _evidence(run)
    assert ev.ok, ev.problems
    assert ev.receipts_checked == ev.artifacts_checked == 2 and ev.final_cells == ev.expected_cells == 2
    assert all(r["receipt"]["digest"] and set(r["receipt"]["links"]) == set(LINKS) for r in _lines(run))
    code, out, _ = _cli(capsys, "verify", str(run))
    assert code == 0 and out.startswith("VERIFIED")


def _break(run: Path, link: str) -> None:
    records = _lines(run)
    r = records[0]
    if link == "task":
        _edit_manifest(run, lambda m: m["matrix"]["tasks"]["gpt"]["task"]["messages"][0].update(content="edited"))
    elif link == "weights":
        key = next(iter(r["model_meta"]["model_files_sha256"]))
        r["model_meta"]["model_files_sha256"][key] = "0" * 64
    elif link == "runner":
        _edit_manifest(run, lambda m: m.update(harness_version="9.9.9"))
    elif link == "libraries":
        _edit_manifest(run, lambda m: m["environment"]["libraries"].update(transformers="0.0.1"))
    elif link == "determinism":
        r["determinism"]["deterministic_algorithms"] = not r["determinism"]["deterministic_algorithms"]
    elif link == "device":
        _edit_manifest(run, lambda m: m["environment"].update(processor="Some Other CPU"))
    elif link == "seed":
        r["axes"]["seed"] = 99
    elif link == "outputs":  # a new artifact and matching record digests: only the receipt still knows
        arrays = {"token_ids": np.array([[1, 2, 3]], dtype=np.int64)}
        RunStore(run).write_artifact(Path(r["artifact"]).stem, arrays)
        from harness.digests import digest_array

        r["digests"]["token_ids"] = r["digests"]["tokens"] = digest_array(arrays["token_ids"])
    _write(run, records)


@pytest.mark.parametrize("link", LINKS)
def test_a_receipt_broken_at_any_one_link_is_named(capsys, run, link):
    TRIED["receipt link"] += 1
    _break(run, link)
    ev = _evidence(run)
    assert any(f"receipt link '{link}' does not hold" in p for p in ev.problems), ev.problems
    code, out, _ = _cli(capsys, "verify", str(run))
    assert code == 1 and f"receipt link '{link}'" in out


def test_an_edited_receipt_digest_is_named(run):
    TRIED["receipt link"] += 1
    records = _lines(run)
    records[1]["receipt"]["digest"] = "f" * 64
    _write(run, records)
    assert any("receipt digest does not match its links" in p for p in _evidence(run).problems)


def test_relabelling_a_record_as_schema_1_does_not_skip_its_receipt(run):
    TRIED["receipt link"] += 1
    records = _lines(run)
    records[0]["schema_version"] = 1
    records[0].pop("receipt")
    records[0]["determinism"]["num_threads"] = 64
    _write(run, records)
    assert any("no receipt" in p for p in _evidence(run).problems)


# --- signatures ------------------------------------------------------------------------------------


def _forge(bundle: Path, out: Path, keep_signature: bool) -> None:
    """Edit a record's timing inside a bundle and rewrite it consistently: new member digest,
    new bundle.json, new archive trailer; optionally keep the old signature block."""
    with zipfile.ZipFile(bundle) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    doc = json.loads(members[BUNDLE_JSON])
    lines = members["results.jsonl"].decode().splitlines()
    rec = json.loads(lines[0])
    rec["timings"]["total_s"] = 0.001  # a faster machine than the real one
    lines[0] = json.dumps(rec)
    members["results.jsonl"] = ("\n".join(lines) + "\n").encode()
    import hashlib

    doc["files"]["results.jsonl"] = hashlib.sha256(members["results.jsonl"]).hexdigest()
    doc.pop("signed_by", None)
    if not keep_signature:
        doc.pop("signature", None)
    members[BUNDLE_JSON] = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    with open(out, "w+b") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in [BUNDLE_JSON] + sorted(n for n in members if n != BUNDLE_JSON):
                zf.writestr(_zipinfo(name, len(members[name])), members[name])
        _append_trailer(fh)


@pytest.fixture
def keys(tmp_path, capsys) -> tuple[Path, Path, Path]:
    assert _cli(capsys, "keygen", str(tmp_path / "op"))[0] == 0
    assert _cli(capsys, "keygen", str(tmp_path / "mallory"))[0] == 0
    assert oct((tmp_path / "op.key").stat().st_mode & 0o777) == "0o600"
    return tmp_path / "op.key", tmp_path / "op.pub", tmp_path / "mallory.key"


def test_a_consistently_rehashed_bundle_is_refused_when_signed(capsys, run, keys, tmp_path):
    TRIED["forged bundle"] += 1
    key, pub, _ = keys
    signed = tmp_path / "signed.zip"
    code, out, _ = _cli(capsys, "bundle", str(run), "--out", str(signed), "--sign", str(key))
    assert code == 0 and "signed by ed25519:" in out
    assert _cli(capsys, "verify", str(signed), "--trusted-keys", str(pub))[0] == 0
    forged = tmp_path / "forged.zip"
    _forge(signed, forged, keep_signature=True)
    code, out, _ = _cli(capsys, "verify", str(forged), "--trusted-keys", str(pub))
    assert code == 1 and "signature does not verify" in out
    code, out, _ = _cli(capsys, "compare", str(signed), str(forged), "--trusted-keys", str(pub))
    assert code == 1 and out.startswith("NOT VERIFIED") and "signature does not verify" in out


def test_a_forged_bundle_without_its_signature_is_labelled_unsigned_and_refused_with_trusted_keys(
    capsys, run, keys, tmp_path
):
    TRIED["forged bundle"] += 1
    key, pub, _ = keys
    signed = tmp_path / "signed.zip"
    _cli(capsys, "bundle", str(run), "--out", str(signed), "--sign", str(key))
    forged = tmp_path / "forged.zip"
    _forge(signed, forged, keep_signature=False)
    assert verify_bundle(forged)["signed_by"] == "unsigned"  # it loads, labelled
    code, out, _ = _cli(capsys, "compare", str(signed), str(forged))
    assert f"{forged}: unsigned" in out
    code, out, _ = _cli(capsys, "verify", str(forged), "--trusted-keys", str(pub))
    assert code == 1 and "unsigned, but trusted keys were given" in out


def test_a_bundle_resigned_by_another_key_is_refused(capsys, run, keys, tmp_path):
    TRIED["forged bundle"] += 1
    _, pub, mallory = keys
    other = tmp_path / "other.zip"
    _cli(capsys, "bundle", str(run), "--out", str(other), "--sign", str(mallory))
    code, out, _ = _cli(capsys, "verify", str(other), "--trusted-keys", str(pub))
    assert code == 1 and "not in the trusted keys" in out


def _certificate(passed: bool) -> dict:
    """A minimal certificate document (what `harness certify` writes, without configurations)."""
    from harness.analysis.crossrun import RunSide
    from harness.workflows.certify import Certificate

    side = RunSide(label="reference", source="ref.zip", run_id="r1", matrix="smoke")
    return Certificate(
        harness_version="0.1.0",
        created_at=0.0,
        passed=passed,
        summary="CERTIFIED" if passed else "NOT CERTIFIED",
        reference=side,
        candidate=side.model_copy(update={"label": "candidate"}),
        match="spec",
        thresholds={},
    ).model_dump(mode="json")


def test_a_signed_certificate_verifies_and_an_edited_one_is_refused(capsys, keys, tmp_path):
    from harness.cli.trust import sign_json_file

    TRIED["forged certificate"] += 1
    key, pub, _ = keys
    cert = tmp_path / "certificate.json"
    cert.write_text(json.dumps(_certificate(passed=False)))
    from harness.store.signing import load_private_key

    sign_json_file(cert, load_private_key(key))
    assert _cli(capsys, "verify", str(cert), "--trusted-keys", str(pub))[0] == 0
    doc = json.loads(cert.read_text())
    doc.update(passed=True, summary="CERTIFIED")
    cert.write_text(json.dumps(doc))
    code, out, _ = _cli(capsys, "verify", str(cert), "--trusted-keys", str(pub))
    assert code == 1 and "signature does not verify" in out


# --- the evidence check fails the gate ---------------------------------------------------------


def _flip(run: Path) -> None:
    art = sorted((run / "artifacts").iterdir())[0]
    data = bytearray(art.read_bytes())
    data[len(data) // 2] ^= 1
    art.write_bytes(bytes(data))


def _delete(run: Path) -> None:
    sorted((run / "artifacts").iterdir())[0].unlink()


def _swap(run: Path) -> None:
    a, _b = sorted((run / "artifacts").iterdir())
    recs = _lines(run)
    recs[0]["artifact"], recs[1]["artifact"] = recs[1]["artifact"], recs[0]["artifact"]
    if recs[0]["digests"] != recs[1]["digests"]:
        _write(run, recs)
    else:  # both outputs are equal in a bitwise run: swap in unrelated arrays instead
        np.savez(a, token_ids=np.array([[9, 9]], dtype=np.int64))


def _empty_npz(run: Path) -> None:
    np.savez(sorted((run / "artifacts").iterdir())[0])


def _unrelated(run: Path) -> None:
    np.savez(sorted((run / "artifacts").iterdir())[0], other=np.zeros(3))


def _compressed_bomb(run: Path) -> None:
    np.savez_compressed(sorted((run / "artifacts").iterdir())[0], token_ids=np.zeros((4096, 4096), np.int64))


def _hex(run: Path) -> None:
    recs = _lines(run)
    d = recs[1]["digests"]["output"]
    recs[1]["digests"]["output"] = ("0" if d[0] != "0" else "1") + d[1:]
    _write(run, recs)


def _copied_digest(run: Path) -> None:
    """A divergent second execution whose record carries the first's digests (copied)."""
    recs = _lines(run)
    RunStore(run).write_artifact(Path(recs[1]["artifact"]).stem, {"token_ids": np.array([[7, 7, 7]], dtype=np.int64)})
    recs[1]["digests"] = dict(recs[0]["digests"])
    _write(run, recs)


def _incomplete(run: Path) -> None:
    _write(run, _lines(run)[:1])


def _duplicate(run: Path) -> None:
    recs = _lines(run)
    other = json.loads(json.dumps(recs[0]))
    other["digests"]["output"] = "a" * 64
    _write(run, recs + [other])


def _foreign(run: Path) -> None:
    recs = _lines(run)
    alien = json.loads(json.dumps(recs[0]))
    alien.update(cell_id="other/float32/qnone/seed7/cpu/t1/b1/pon/w0/r0", config_id="other/float32/qnone/cpu/pon")
    _write(run, recs + [alien])


def _garbage(run: Path) -> None:
    with open(run / "results.jsonl", "a") as fh:
        fh.write("not json\n" * 5000)


def _interrupted(run: Path) -> None:
    _edit_manifest(run, lambda m: m.update(status="running"))


def _duplicate_key(run: Path) -> None:
    """A genuine record with a second ``status`` key in front: last-wins reads ``ok`` (the
    record is otherwise untouched), a reviewer reads ``failed``."""
    text = (run / "results.jsonl").read_text().splitlines()
    text[0] = '{"status": "failed", ' + text[0][1:]
    (run / "results.jsonl").write_text("\n".join(text) + "\n")


BROKEN = {
    "byte flip": _flip,
    "deleted artifact": _delete,
    "swapped artifacts": _swap,
    "empty npz": _empty_npz,
    "unrelated arrays": _unrelated,
    "compressed bomb": _compressed_bomb,
    "one hex char": _hex,
    "copied digest": _copied_digest,
    "incomplete run": _incomplete,
    "second ok record": _duplicate,
    "foreign record": _foreign,
    "garbage lines": _garbage,
    "killed (running, no lock)": _interrupted,
    "duplicate key in a record": _duplicate_key,
}


@pytest.mark.parametrize("damage", sorted(BROKEN))
def test_report_gate_fails_on_broken_or_incomplete_evidence(capsys, run, damage):
    TRIED["broken evidence"] += 1
    assert _cli(capsys, "report", str(run), "--gate", "--formats", "json")[0] == 0
    BROKEN[damage](run)
    code, _, err = _cli(capsys, "report", str(run), "--gate", "--formats", "json")
    SEEN["gate passed"] += code == 0
    assert code == 1 and "GATE FAILED evidence" in err, err
    assert len(err.splitlines()) <= 40  # 5,000 garbage lines are counted, not printed one by one


def test_no_verify_cannot_pass_a_gate(capsys, run):
    code, _, err = _cli(capsys, "report", str(run), "--gate", "--no-verify", "--formats", "json")
    assert code == 1 and "not verified" in err


def test_a_killed_run_is_reported_interrupted(capsys, run):
    _interrupted(run)
    _cli(capsys, "report", str(run), "--formats", "json")
    report = json.loads((run / "report.json").read_text())
    assert report["evidence"]["status"] == "interrupted"
    assert any("'interrupted'" in p for p in report["problems"])


def test_a_compressed_artifact_is_refused_before_it_is_inflated(run):
    _compressed_bomb(run)
    rec = _lines(run)[0]
    with pytest.raises(StoreError, match="compressed"):
        RunStore(run).load_artifact(rec["artifact"], rec["digests"])


def test_fail_on_given_as_a_string_is_refused_not_a_substring_test(capsys, run):
    TRIED["manifest values"] += 1
    _edit_manifest(run, lambda m: m["matrix"]["spec"]["gates"].update(fail_on="not_ready"))
    code, _, err = _cli(capsys, "report", str(run), "--gate", "--formats", "json")
    assert code == 2 and "manifest field matrix.spec.gates.fail_on: Input should be a valid list" in err


@pytest.mark.parametrize("value", [True, -7, "1"])
def test_manifest_schema_version_must_be_a_non_negative_integer(capsys, run, value):
    TRIED["manifest values"] += 1
    _edit_manifest(run, lambda m: m.update(schema_version=value))
    code, _, err = _cli(capsys, "report", str(run), "--formats", "json")
    assert code == 2 and "schema_version" in err


# --- safe outputs -----------------------------------------------------------------------------------


def test_outputs_never_replace_special_files(capsys, run, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for args in (
        ["bundle", str(run), "--out", str(fifo)],
        ["compare", str(run), str(run), "--json", str(fifo)],
        ["bundle", str(run), "--out", str(tmp_path)],
    ):
        TRIED["unsafe output"] += 1
        code, _, err = _cli(capsys, *args)
        SEEN["unsafe write"] += not fifo.is_fifo()
        assert code == 2 and "refusing to write over a" in err, err
    assert fifo.is_fifo()
    link = tmp_path / "link.zip"
    link.symlink_to(tmp_path / "elsewhere.zip")
    TRIED["unsafe output"] += 1
    assert _cli(capsys, "bundle", str(run), "--out", str(link))[0] == 2
    SEEN["unsafe write"] += (tmp_path / "elsewhere.zip").exists() or not link.is_symlink()
    assert not (tmp_path / "elsewhere.zip").exists()


def test_links_inside_a_run_directory_are_never_followed(capsys, run, tmp_path):
    outside = tmp_path / "outside.jsonl"
    shutil.move(run / "results.jsonl", outside)
    (run / "results.jsonl").symlink_to(outside)
    before = outside.read_bytes()
    for args in (["report", str(run)], ["bundle", str(run), "--out", str(tmp_path / "b.zip")], ["verify", str(run)]):
        TRIED["linked run file"] += 1
        code, _, err = _cli(capsys, *args)
        assert code == 2 and "symbolic link" in err, err
    with pytest.raises(StoreError, match="symbolic link"):
        RunStore(run).repair_tail()
    SEEN["unsafe write"] += outside.read_bytes() != before
    assert outside.read_bytes() == before


def test_a_linked_artifacts_folder_is_refused(capsys, run, tmp_path):
    TRIED["linked run file"] += 1
    shutil.move(run / "artifacts", tmp_path / "elsewhere")
    (run / "artifacts").symlink_to(tmp_path / "elsewhere")
    code, _, err = _cli(capsys, "bundle", str(run), "--out", str(tmp_path / "b.zip"))
    assert code == 2 and "symbolic link" in err
    with pytest.raises(StoreError, match="symbolic link"):
        RunStore(run).write_artifact("x", {"a": np.zeros(1)})


def test_a_fifo_given_as_a_bundle_does_not_hang(capsys, tmp_path):
    TRIED["special file"] += 1
    fifo = tmp_path / "b.bundle.zip"
    os.mkfifo(fifo)
    code, _, err = _cli(capsys, "verify", str(fifo))
    assert code == 2 and "not a regular file" in err


def test_bundle_member_names_end_at_the_end(tmp_path):
    from harness.store.bundle import BundleError, _check_member_name

    TRIED["bundle names"] += 1
    with pytest.raises(BundleError, match="unknown member"):
        _check_member_name(tmp_path / "b.zip", "artifacts/x.npz\n")


def test_overlapping_bundle_members_are_refused(capsys, run, tmp_path):
    """A central-directory entry pointing into another member's bytes: a zip bomb's trick."""
    import struct

    TRIED["bundle names"] += 1
    bundle = tmp_path / "b.zip"
    _cli(capsys, "bundle", str(run), "--out", str(bundle))
    data = bytearray(bundle.read_bytes())
    with zipfile.ZipFile(bundle) as zf:
        first = zf.infolist()[1]
    entries = [i for i in range(len(data) - 4) if data[i : i + 4] == b"PK\x01\x02"]
    struct.pack_into("<I", data, entries[2] + 42, first.header_offset)  # relative offset of local header
    bundle.write_bytes(bytes(data))
    code, _, err = _cli(capsys, "verify", str(bundle))
    assert code == 2 and "overlap" in err, err


def test_a_flipped_tiny_model_weight_is_noticed(tmp_path, tiny_gpt2, monkeypatch):
    from harness.models import tiny

    TRIED["tiny cache"] += 1
    home = tmp_path / "home"
    dest = tiny.tiny_dir("gpt2").relative_to(tiny.cache_root())
    monkeypatch.setenv("CONSENSUS_HARNESS_HOME", str(home))
    shutil.copytree(tiny_gpt2, tiny.cache_root() / dest)
    target = tiny.tiny_dir("gpt2")
    assert target.exists(), target
    weights = next(target.rglob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x40
    weights.write_bytes(bytes(data))
    with pytest.raises(tiny.TinyCacheCorrupted, match="weights changed"):
        tiny.ensure_tiny("gpt2")


# --- run-directory truth ------------------------------------------------------------------------


def test_resume_accepts_the_same_matrix_given_by_another_path(good_run, run, tmp_path):
    from conftest import run_cli

    TRIED["resume by another path"] += 1
    other = tmp_path / "elsewhere" / "same.toml"
    other.parent.mkdir()
    shutil.copy(good_run.parent / "mini.toml", other)
    res = run_cli("run", str(other), "--out", str(run), "--resume", "--no-progress", "--formats", "json")
    assert res.returncode == 0 and "0 executed, 2 already done" in res.stdout, res.stderr


def test_a_fresh_run_in_a_folder_with_only_an_old_manifest_writes_its_own(good_run, tmp_path):
    from conftest import run_cli

    TRIED["stale manifest"] += 1
    run = tmp_path / "run"
    run.mkdir()
    old = json.loads((good_run / "manifest.json").read_text())
    old["matrix"]["spec"]["gates"]["fail_on"] = []  # an old run whose gates never fail
    (run / "manifest.json").write_text(json.dumps(old))
    matrix = mini_matrix(tmp_path, name="other", repeats=1, workers=1, axes={"seed": [3], "threads": [1]})
    res = run_cli("run", str(matrix), "--out", str(run), "--no-progress", "--formats", "json")
    assert res.returncode == 0, res.stderr
    assert json.loads((run / "manifest.json").read_text())["matrix"]["spec"]["name"] == "other"


def test_a_newer_manifest_inside_a_bundle_names_the_bundle_not_a_temporary_folder(capsys, run, tmp_path):
    TRIED["bundle version"] += 1
    bundle = tmp_path / "b.zip"
    assert _cli(capsys, "bundle", str(run), "--out", str(bundle))[0] == 0
    with zipfile.ZipFile(bundle) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = json.loads(members["manifest.json"])
    manifest["schema_version"] = 99
    members["manifest.json"] = json.dumps(manifest).encode()
    import hashlib

    doc = json.loads(members[BUNDLE_JSON])
    doc["files"]["manifest.json"] = doc["manifest_sha256"] = hashlib.sha256(members["manifest.json"]).hexdigest()
    members[BUNDLE_JSON] = json.dumps(doc).encode()
    with open(bundle, "w+b") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in [BUNDLE_JSON] + sorted(n for n in members if n != BUNDLE_JSON):
                zf.writestr(_zipinfo(name, len(members[name])), members[name])
        _append_trailer(fh)
    code, _, err = _cli(capsys, "compare", str(bundle), str(bundle))
    assert code == 2 and f"bundle {bundle}" in err and "harness-bundle-" not in err and "newer" in err, err


def test_garbage_lines_give_a_small_report(capsys, run):
    TRIED["broken evidence"] += 1
    with open(run / "results.jsonl", "a") as fh:
        fh.write("garbage\n" * 20_000)
    code, _, err = _cli(capsys, "report", str(run), "--gate", "--formats", "json,md")
    assert code == 1 and len(err.splitlines()) <= 40
    assert (run / "report.json").stat().st_size < 200_000 and (run / "report.md").stat().st_size < 200_000


# --- one value per document: duplicate keys refused everywhere the harness reads JSON ------------


def _rewrite_bundle(bundle: Path, out: Path, edit) -> None:
    with zipfile.ZipFile(bundle) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[BUNDLE_JSON] = edit(members[BUNDLE_JSON].decode()).encode()
    with open(out, "w+b") as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in [BUNDLE_JSON] + sorted(n for n in members if n != BUNDLE_JSON):
                zf.writestr(_zipinfo(name, len(members[name])), members[name])
        _append_trailer(fh)


def test_duplicate_keys_are_refused_in_every_document_the_harness_reads(capsys, good_run, run, keys, tmp_path):
    TRIED["duplicate keys"] += 5
    # a bundle of the genuine run, made before the run is edited below
    bundle = tmp_path / "good.zip"
    assert _cli(capsys, "bundle", str(run), "--out", str(bundle))[0] == 0
    twice = tmp_path / "twice.zip"
    _rewrite_bundle(bundle, twice, lambda text: '{"files": {}, ' + text.lstrip()[1:])
    code, _, err = _cli(capsys, "verify", str(twice))
    assert code == 2 and "bundle.json is not valid JSON (duplicate key 'files')" in err and len(err.splitlines()) == 1
    # report.json
    assert _cli(capsys, "report", str(run), "--formats", "json")[0] == 0
    report = run / "report.json"
    report.write_text('{"schema_version": 1, ' + report.read_text().lstrip()[1:])
    code, _, err = _cli(capsys, "show", str(run))
    assert code == 2 and "duplicate key 'schema_version'" in err and len(err.splitlines()) == 1
    report.unlink()
    # a record: that line is refused (named, with the key), the others are read
    _duplicate_key(run)
    loaded = RunStore(run).load_records()
    assert len(loaded.records) == 1 and "duplicate key 'status'" in loaded.problems[0]
    # a manifest
    manifest = run / "manifest.json"
    manifest.write_text('{"status": "complete", ' + manifest.read_text().lstrip()[1:])
    code, _, err = _cli(capsys, "report", str(run), "--formats", "json")
    assert code == 2 and "manifest is not valid JSON (duplicate key 'status')" in err and len(err.splitlines()) == 1
    # a certificate
    key, pub, _ = keys
    from harness.cli.trust import sign_json_file
    from harness.store.signing import load_private_key

    cert = tmp_path / "certificate.json"
    cert.write_text(json.dumps(_certificate(passed=False)))
    sign_json_file(cert, load_private_key(key))
    cert.write_text('{"passed": true, ' + cert.read_text().lstrip()[1:])
    code, _, err = _cli(capsys, "verify", str(cert), "--trusted-keys", str(pub))
    assert code == 2 and "certificate is not valid JSON (duplicate key 'passed')" in err


# --- issue 29: trust asked for and not given; --junit never over a run's records -----------------


def test_an_unsigned_run_directory_is_not_verified_under_trusted_keys(capsys, run, keys):
    _, pub, _ = keys
    TRIED["unsigned run under trusted keys"] += 1
    code, out, _ = _cli(capsys, "verify", str(run), "--trusted-keys", str(pub))
    assert code == 1 and out.startswith("NOT VERIFIED") and "a run directory is unsigned" in out, out
    code, out, _ = _cli(capsys, "compare", str(run), str(run), "--trusted-keys", str(pub))
    assert code == 1 and out.startswith("NOT VERIFIED") and "a run directory is unsigned" in out, out
    assert _cli(capsys, "verify", str(run))[0] == 0  # without trusted keys: labelled, as before


def _one_line(code: int, err: str, *needles: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_junit_is_refused_inside_a_run_the_command_reads_or_writes(capsys, run, tmp_path):
    records = (run / "results.jsonl").read_bytes()
    manifest = (run / "manifest.json").read_bytes()
    for target in (run / "results.jsonl", run / "manifest.json", run / "new" / "j.xml", run):
        TRIED["junit over a run"] += 1
        code, _, err = _cli(capsys, "report", str(run), "--junit", str(target))
        _one_line(code, err, "argument --junit", "inside")
        code, _, err = _cli(capsys, "compare", str(run), str(run), "--junit", str(target))
        _one_line(code, err, "argument --junit", "inside")
    code, _, err = _cli(capsys, "report", str(run), "--junit", "")
    _one_line(code, err, "argument --junit", "empty path")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, _, err = _cli(capsys, "report", str(run), "--junit", str(blocker / "j.xml"))
    _one_line(code, err, "argument --junit", "cannot write")
    assert (run / "results.jsonl").read_bytes() == records and (run / "manifest.json").read_bytes() == manifest
    assert not (run / "new").exists()
    assert _cli(capsys, "verify", str(run))[0] == 0
    assert _cli(capsys, "report", str(run), "--junit", str(tmp_path / "ok.xml"))[0] == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_junit_in_a_read_only_folder_is_refused_before_the_report(capsys, run, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        code, _, err = _cli(capsys, "report", str(run), "--junit", str(folder / "j.xml"))
        _one_line(code, err, "cannot write in")
    finally:
        folder.chmod(0o755)


def test_run_refuses_a_junit_target_inside_its_out_before_any_cell(capsys, tmp_path):
    matrix = mini_matrix(tmp_path, repeats=1, workers=1, axes={"seed": [1], "threads": [1], "batch_size": [1]})
    out = tmp_path / "out"
    code, _, err = _cli(capsys, "run", str(matrix), "--out", str(out), "--junit", str(out / "manifest.json"))
    _one_line(code, err, "argument --junit", "inside")
    assert not out.exists()  # nothing ran


def test_a_manifest_matrix_name_with_xml_specials_names_the_field(capsys, run):
    TRIED["manifest matrix name"] += 1
    _edit_manifest(run, lambda m: m["matrix"]["spec"].update(name='<a&"b">'))
    code, out, err = _cli(capsys, "verify", str(run))
    assert code in (1, 2) and "matrix.spec.name" in out + err, out + err
    assert "validation error for" not in out + err
