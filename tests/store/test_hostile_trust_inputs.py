"""Hostile inputs on the trust surfaces (issue 29 items 7-9, 13): key files, keygen names and
replay candidates. Each is refused in one line naming the file and field, without blocking on
a FIFO or reading a huge file into memory."""

from __future__ import annotations

import io
import json
import os
import struct
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from harness.cli.main import main
from harness.store.candidate import MAX_CANDIDATE_BYTES, CandidateError, read_candidate
from harness.store.signing import SignatureError, generate_keypair, load_private_key, load_trusted_keys


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in err, err
    return code, out, err


def _one_line(code: int, err: str, *needles: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _no_hang(fn, seconds: float = 20.0):
    """Run ``fn`` in a thread; a blocked open of a FIFO never returns (the failure this guards)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as err:
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked on a FIFO"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture
def fifo(tmp_path) -> Path:
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def test_key_files_that_are_fifos_or_devices_are_refused_unread(fifo, monkeypatch, capsys, tmp_path):
    for reader in (load_trusted_keys, load_private_key):
        with pytest.raises(SignatureError, match="not a regular file"):
            _no_hang(lambda reader=reader: reader(fifo))
        with pytest.raises(SignatureError, match="not a regular file"):
            reader(Path("/dev/zero"))
    monkeypatch.setenv("HARNESS_TRUSTED_KEYS", str(fifo))
    with pytest.raises(SignatureError, match="not a regular file"):
        _no_hang(lambda: load_trusted_keys(None))
    monkeypatch.delenv("HARNESS_TRUSTED_KEYS")
    code, _, err = _no_hang(lambda: _cli(capsys, "verify", str(tmp_path), "--trusted-keys", "/dev/zero"))
    _one_line(code, err, "/dev/zero", "not a regular file")
    big = tmp_path / "big.pub"
    with open(big, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: a size check, not a read, must refuse it
    with pytest.raises(SignatureError, match="too large"):
        load_trusted_keys(big)


def test_a_trusted_keys_file_with_a_bom_reads(tmp_path):
    _, pub = generate_keypair(tmp_path / "op")
    line = pub.read_text()
    bom = tmp_path / "bom.pub"
    bom.write_bytes(b"\xef\xbb\xbf" + line.encode())
    assert load_trusted_keys(bom) == {line.split()[1]}


@pytest.mark.parametrize("name", ["", ".", "..", "dir/"])
def test_keygen_refuses_names_without_a_file_name(capsys, tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, "keygen", name)
    _one_line(code, err, "needs a file name")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args", [["--comment", "op\ned25519 " + "ab" * 32 + " x", "k"], ["k\nx"], ["k\x1b[2J"]])
def test_keygen_refuses_control_characters(capsys, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    code, _, err = _cli(capsys, "keygen", *args)
    _one_line(code, err, "control character")
    assert not list(tmp_path.iterdir())


# --- replay candidates ------------------------------------------------------------------------


def _folder(tmp_path: Path, doc: dict | None = None, wav: bytes | None = None) -> Path:
    folder = tmp_path / "cand"
    folder.mkdir(exist_ok=True)
    body = doc if doc is not None else {"schema_version": 1, "arrays": {"codes": [[1, 2], [3, 4]]}}
    (folder / "x.tokens.json").write_text(json.dumps(body))
    if wav is not None:
        (folder / "x.wav").write_bytes(wav)
    return folder


def _wav(samples: int = 4000) -> bytes:
    from scipy.io import wavfile

    buf = io.BytesIO()
    wavfile.write(buf, 32000, np.zeros(samples, dtype=np.float32))
    return buf.getvalue()


@pytest.mark.parametrize(
    "doc, needle",
    [
        (
            {"schema_version": 1, "arrays": {"codes": [[2**64]]}},
            "arrays.codes: integer 18446744073709551616 out of range",
        ),
        ({"schema_version": 1, "arrays": {"codes": [[-(2**70)]]}}, "out of range"),
        ({"schema_version": True, "arrays": {"codes": [[1]]}}, "schema_version True"),
    ],
)
def test_candidate_token_documents_refused_naming_the_field(tmp_path, doc, needle):
    with pytest.raises(CandidateError) as info:
        read_candidate(_folder(tmp_path, doc))
    assert needle in str(info.value) and "x.tokens.json" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "cut, needle",
    [
        (lambda w: w[:20], "chunk"),
        (lambda w: w[:44], "chunk"),
        (lambda w: w[:8], "no RIFF/WAVE header"),
        (lambda w: _lie_about_data(w), "declares 4294967295 bytes"),
    ],
)
def test_broken_wavs_are_one_line_naming_the_file(tmp_path, cut, needle):
    folder = _folder(tmp_path, wav=cut(_wav()))
    with pytest.raises(CandidateError) as info:
        read_candidate(folder)
    msg = str(info.value)
    assert msg.startswith(f"{folder / 'x.wav'}: not a WAV file (") and needle in msg and "\n" not in msg, msg


def _lie_about_data(wav: bytes) -> bytes:
    at = wav.index(b"data")
    return wav[: at + 4] + struct.pack("<I", 0xFFFFFFFF) + wav[at + 8 :]


def test_an_intact_wav_still_reads(tmp_path):
    files = read_candidate(_folder(tmp_path, wav=_wav()))
    assert files.arrays["waveform"].shape == (4000, 1)


@pytest.mark.parametrize("name", ["x.tokens.json", "x.wav", "x.response.json"])
def test_a_huge_sparse_candidate_file_is_refused_before_it_is_read(tmp_path, name):
    folder = _folder(tmp_path)
    with open(folder / name, "wb") as fh:
        fh.truncate(1 << 30)
    tracemalloc.start()
    try:
        with pytest.raises(CandidateError, match="too large"):
            read_candidate(folder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MAX_CANDIDATE_BYTES // 4, peak  # was 1,155 MB: the whole file, then the cap
