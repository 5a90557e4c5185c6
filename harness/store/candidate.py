"""A candidate's result folder: what a node sends for a validator to replay.

Why a file of its own: the network's result is the WAV (audio) or the response JSON (text),
and neither holds the discrete output a replay needs (MusicGen's codes, the token ids).
``harness exec --out DIR`` writes, next to the result, ``STEM.tokens.json``: the discrete
arrays as plain JSON integers, with the batch size and device the node ran on. Nothing in it
is trusted beyond what a replay re-derives: the device and batch size only select which draws
are regenerated (a false claim makes an honest output fail, never a dishonest one pass), and no
logit or margin is read from the candidate.

Format (``CANDIDATE_SCHEMA_VERSION`` 1): ``{"schema_version": 1, "arrays": {"codes": [[...]]},
"batch_size": 1, "device": "cpu"}``; arrays are ``codes`` (frames x codebooks), ``token_ids``
(rows x new tokens, -1 padded) and, for a chain, ``text_token_ids`` and ``codes``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness.digests import strict_json_loads
from harness.errors import HarnessError

CANDIDATE_SCHEMA_VERSION = 1
DISCRETE_ARRAYS = ("codes", "token_ids", "text_token_ids")
MAX_CANDIDATE_BYTES = 64 * 1024 * 1024


class CandidateError(HarnessError, ValueError):
    """A result folder that cannot be read as a candidate; one line naming the file."""


@dataclass
class CandidateFiles:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    response: dict[str, Any] | None = None
    batch_size: int = 1
    device: str = "cpu"
    files: list[Path] = field(default_factory=list)


def tokens_document(arrays: dict[str, np.ndarray], batch_size: int, device: str) -> dict[str, Any]:
    return {
        "schema_version": CANDIDATE_SCHEMA_VERSION,
        "batch_size": int(batch_size),
        "device": device,
        "arrays": {
            k: np.asarray(v).astype(np.int64).tolist() for k, v in sorted(arrays.items()) if k in DISCRETE_ARRAYS
        },
    }


def _read(path: Path, what: str) -> bytes:
    """The file's bytes: its size is checked before a byte is read (a 1 GiB sparse file was read
    whole before the cap applied), and a device or FIFO is refused unread."""
    from harness.store.files import read_input_file

    if not path.is_file():
        raise CandidateError(f"{path}: not a file ({what})")
    return read_input_file(path, MAX_CANDIDATE_BYTES, CandidateError)


def _json(path: Path, what: str) -> Any:
    raw = _read(path, what)
    try:
        return strict_json_loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CandidateError(f"{path}: not valid JSON ({str(err).splitlines()[0]})") from None


def _int_matrix(value: Any, where: str) -> np.ndarray:
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        raise CandidateError(f"{where}: expected a non-empty list of rows of integers")
    width = len(value[0])
    if any(len(r) != width for r in value) or not all(type(x) is int for r in value for x in r):
        raise CandidateError(f"{where}: rows must be equally long lists of integers")
    # the range first: 2**64 does not fit the int64 conversion (an OverflowError naming nothing)
    bad = next((x for r in value for x in r if not -1 <= x < 1 << 31), None)
    if bad is not None:
        raise CandidateError(f"{where}: integer {bad} out of range (token ids are -1..2**31-1)")
    return np.asarray(value, dtype=np.int64)


def read_candidate(folder: str | Path, stem: str | None = None) -> CandidateFiles:
    """The candidate in ``folder`` (the one ``*.tokens.json``, or ``STEM.tokens.json``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CandidateError(f"{folder}: not a folder (expected a candidate's result folder)")
    if stem is None:
        found = sorted(folder.glob("*.tokens.json"))
        if len(found) != 1:
            raise CandidateError(
                f"{folder}: expected one *.tokens.json (the discrete output `harness exec --out` "
                f"writes), found {len(found)}"
            )
        stem = found[0].name[: -len(".tokens.json")]
    tokens_path = folder / f"{stem}.tokens.json"
    doc = _json(tokens_path, "the discrete output")
    if not isinstance(doc, dict):
        raise CandidateError(f"{tokens_path}: expected a JSON object")
    version = doc.get("schema_version")
    if type(version) is not int or version != CANDIDATE_SCHEMA_VERSION:  # ``true`` is not version 1
        raise CandidateError(
            f"{tokens_path}: schema_version {version!r}; this harness reads {CANDIDATE_SCHEMA_VERSION}"
        )
    unknown = sorted(set(doc) - {"schema_version", "arrays", "batch_size", "device"})
    if unknown:
        raise CandidateError(f"{tokens_path}: unknown field {unknown[0]!r}")
    arrays_doc = doc.get("arrays")
    if not isinstance(arrays_doc, dict) or not arrays_doc or set(arrays_doc) - set(DISCRETE_ARRAYS):
        raise CandidateError(f"{tokens_path}: arrays must name some of {', '.join(DISCRETE_ARRAYS)}")
    batch = doc.get("batch_size", 1)
    if type(batch) is not int or not 1 <= batch <= 64:
        raise CandidateError(f"{tokens_path}: batch_size must be an integer 1..64")
    device = doc.get("device", "cpu")
    if not isinstance(device, str) or not device or len(device) > 32:
        raise CandidateError(f"{tokens_path}: device must be a short string")
    out = CandidateFiles(batch_size=batch, device=device, files=[tokens_path])
    for name, value in arrays_doc.items():
        out.arrays[name] = _int_matrix(value, f"{tokens_path}: arrays.{name}")
    wav, response = folder / f"{stem}.wav", folder / f"{stem}.response.json"
    if wav.exists():
        import io

        from scipy.io import wavfile

        data = _read(wav, "the waveform")
        _check_wav_chunks(data, wav)
        try:
            _, samples = wavfile.read(io.BytesIO(data))
        except (ValueError, EOFError, struct.error) as err:
            raise CandidateError(f"{wav}: not a WAV file ({str(err).splitlines()[0] or type(err).__name__})") from None
        samples = np.asarray(samples)
        if samples.dtype != np.float32:
            raise CandidateError(f"{wav}: samples are {samples.dtype}, a node writes float32")
        out.arrays["waveform"] = samples[:, None] if samples.ndim == 1 else samples
        out.files.append(wav)
    if response.exists():
        out.response = _json(response, "the response")
        if not isinstance(out.response, dict):
            raise CandidateError(f"{response}: expected a JSON object")
        out.files.append(response)
    return out


def _check_wav_chunks(data: bytes, wav: Path) -> None:
    """Every RIFF chunk must fit in the file: scipy reads a data chunk that declares 4 GiB in a
    16 KB file as whatever is there, without a word; a header cut short is said as such."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        raise CandidateError(f"{wav}: not a WAV file ({len(data)} bytes, no RIFF/WAVE header)")
    order = "<" if data[:4] == b"RIFF" else ">"
    offset, seen_data = 12, False
    while offset + 8 <= len(data):
        name, size = data[offset : offset + 4], struct.unpack(f"{order}I", data[offset + 4 : offset + 8])[0]
        if offset + 8 + size > len(data):
            raise CandidateError(
                f"{wav}: not a WAV file (chunk {name.decode('latin-1')!r} declares {size} bytes, "
                f"the file holds {len(data) - offset - 8} after its header)"
            )
        seen_data = seen_data or name == b"data"
        offset += 8 + size + (size & 1)
    if not seen_data:
        raise CandidateError(f"{wav}: not a WAV file (no data chunk in {len(data)} bytes)")


def write_tokens(path: Path, arrays: dict[str, np.ndarray], batch_size: int, device: str) -> bool:
    """Write ``STEM.tokens.json`` when the output has a discrete array; True when written."""
    from harness.store.files import atomic_write_bytes

    doc = tokens_document(arrays, batch_size, device)
    if not doc["arrays"]:
        return False
    atomic_write_bytes(path, json.dumps(doc, separators=(",", ":")).encode("utf-8"))
    return True
