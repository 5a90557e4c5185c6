"""Canonical bytes and sha256 digests of outputs.

Why canonical: two nodes must produce the same digest for the same numbers whatever their
byte order, memory layout or JSON key order. Arrays hash as a header (dtype in
little-endian form and shape) followed by C-order little-endian bytes; JSON hashes as UTF-8
with sorted keys and no whitespace (the network validates text results by SHA-256 of the
result JSON, so the serialisation is part of the contract).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

_CHUNK = 16 * 1024 * 1024


def array_header(arr: np.ndarray) -> bytes:
    """``ndarray|<f4|480,1|``: the dtype is always spelt little-endian ('|' for bytes)."""
    dt = arr.dtype if arr.dtype.byteorder == "|" else arr.dtype.newbyteorder("<")
    return f"ndarray|{dt.str}|{','.join(str(d) for d in arr.shape)}|".encode()


def canonical_array(arr: np.ndarray) -> np.ndarray:
    """Little-endian, C-contiguous view or copy of ``arr``."""
    arr = np.asarray(arr)
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not np.little_endian):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    return np.ascontiguousarray(arr)


def digest_array(arr: np.ndarray) -> str:
    """sha256 over header + canonical bytes; hashes in chunks, without copying a C array."""
    arr = canonical_array(arr)
    h = hashlib.sha256(array_header(arr))
    flat = arr.reshape(-1).view(np.uint8) if arr.size else np.empty(0, np.uint8)
    for start in range(0, flat.size, _CHUNK):
        h.update(flat[start : start + _CHUNK].data)
    return h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    """Sorted keys, no whitespace, UTF-8, NaN refused: one byte string per value."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def digest_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj)).hexdigest()


def digest_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def short(digest: str | None, n: int = 12) -> str:
    return (digest or "-")[:n]


class StrictJSONError(ValueError):
    """A document that is JSON to Python's parser but not one value: a key given twice
    (last-wins would let a reviewer and the harness read different documents), NaN or
    Infinity, or nesting too deep to read."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJSONError(f"duplicate key {key!r}")
            seen.add(key)
    return out


def _reject_constant(name: str) -> Any:
    raise StrictJSONError(f"{name} is not valid JSON")


def strict_json_loads(raw: str | bytes) -> Any:
    """The reader of documents the harness trusts (tasks, manifests, records, bundles,
    certificates, reports): ``canonical_json``'s counterpart. Raises ``ValueError``
    (``json.JSONDecodeError``, ``UnicodeDecodeError`` or ``StrictJSONError``)."""
    try:
        return json.loads(raw, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except RecursionError:
        raise StrictJSONError("JSON nested too deeply") from None


def sha256_file(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks (a model's weights need not fit in memory twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
