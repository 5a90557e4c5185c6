"""Check an artifact npz's structure before a single array is loaded.

Why: ``np.load`` inflates a compressed member and allocates whatever shape a header claims,
so a 1 MiB artifact could ask report/compare for gigabytes before any digest is compared.
The harness writes artifacts with ``np.savez`` (members stored, never compressed), so
anything else is refused from the zip directory and the ``.npy`` headers alone: compressed,
overlapping or oversized members, object dtypes, and headers whose shape needs more bytes
than the member holds.
"""

from __future__ import annotations

import itertools
import zipfile
from pathlib import Path

import numpy as np

MAX_ARTIFACT_BYTES = 4 << 30


class BadArtifact(ValueError):
    pass


def check_npz(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{array name: (shape, dtype str)}`` of a well-formed artifact, or BadArtifact."""
    size = path.stat().st_size
    if size > MAX_ARTIFACT_BYTES:
        raise BadArtifact(f"{size} bytes, over the {MAX_ARTIFACT_BYTES} byte artifact limit")
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise BadArtifact(f"not an npz archive ({err})") from None
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    with zf:
        spans = []
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise BadArtifact(f"member {info.filename!r} is compressed; artifacts store arrays uncompressed")
            if not info.filename.endswith(".npy") or "/" in info.filename:
                raise BadArtifact(f"unexpected member {info.filename!r}")
            if info.file_size > size or info.header_offset + info.file_size > size:
                raise BadArtifact(f"member {info.filename!r} claims more bytes than the file holds")
            spans.append((info.header_offset, info.header_offset + 30 + len(info.filename) + info.file_size))
            name = info.filename[:-4]
            if name in out:
                raise BadArtifact(f"member {info.filename!r} appears twice")
            with zf.open(info) as fh:
                try:
                    version = np.lib.format.read_magic(fh)
                    read = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _fortran, dtype = read(fh, max_header_size=10_000)
                except zipfile.BadZipFile as err:
                    raise BadArtifact(f"member {info.filename!r} changed ({err}): corrupted artifact") from None
                except Exception as err:
                    raise BadArtifact(f"member {info.filename!r} has no valid .npy header ({err})") from None
            if dtype.hasobject:
                raise BadArtifact(f"array {name!r} has an object dtype (pickle); refused")
            need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
            if need > info.file_size:
                raise BadArtifact(f"array {name!r} header asks for {need} bytes but the member holds {info.file_size}")
            out[name] = (tuple(int(d) for d in shape), dtype.str)
        spans.sort()
        for (_, a1), (b0, _) in itertools.pairwise(spans):
            if b0 < a1:
                raise BadArtifact("members overlap (a zip bomb?)")
    return out
