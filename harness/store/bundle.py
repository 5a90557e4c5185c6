"""Run bundles: one verifiable file that carries a run to another machine.

A bundle is an uncompressed zip holding ``bundle.json``, ``manifest.json``, ``results.jsonl``
and ``artifacts/*.npz`` (reports, logs and locks stay behind: they are derived or local).
``bundle.json`` = ``{"bundle_schema_version", "files": {relpath: sha256}, "manifest_sha256",
"summary"}``; the summary repeats the environment fingerprint and the determinism flags the
records say were in force, so a reader sees what produced the run without unpacking it.

Why these choices:
  - Deterministic bytes: members in sorted order, fixed timestamps and modes, no compression
    (deflate output differs between zlib versions, and npz files are zips already), so the
    same run always gives the same bundle and its sha256 can be pinned in a certificate.
  - Every byte is checked. The members by their sha256 in bundle.json (plus the zip CRC);
    everything else (local headers, central directory) by a whole-archive sha256 kept in
    the zip comment: ``consensus-harness bundle sha256=<hex of every byte before the
    comment-length field>``. A zip reader ignores most header fields, so without that
    trailer a changed timestamp byte would pass unnoticed.
  - Loading refuses, in one line naming the bundle and the member, anything unexpected:
    path traversal, unknown, missing or extra members, compressed members (no zip bombs),
    a newer schema version. It is a ``StoreError``, so the CLI prints ``error: ...``, exit 2.

Integrity is not authorship: someone who rewrites a bundle consistently (new digests, new
trailer) makes a valid *unsigned* bundle. ``harness bundle --sign KEY`` embeds an Ed25519
signature over bundle.json (whose file table holds every member's sha256; see
harness.store.signing); loading verifies it, and with trusted keys (``--trusted-keys`` or
``$HARNESS_TRUSTED_KEYS``) refuses unsigned bundles and bundles signed by other keys. Unsigned
bundles still load and are labelled ``unsigned`` wherever they are shown.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import struct
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

from harness.digests import sha256_file, strict_json_loads
from harness.store.run import (
    ARTIFACTS,
    MANIFEST,
    RESULTS,
    RunLocked,
    RunStore,
    StoreError,
    atomic_output,
    check_version,
)
from harness.store.safe_output import open_in_run

BUNDLE_SCHEMA_VERSION = 1
BUNDLE_JSON = "bundle.json"
BUNDLE_SUFFIX = ".bundle.zip"
TRAILER_PREFIX = b"consensus-harness bundle sha256="
TRAILER_LEN = len(TRAILER_PREFIX) + 64
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_CHUNK = 1 << 20
_ARTIFACT_NAME = re.compile(r"artifacts/[A-Za-z0-9][A-Za-z0-9_.+=-]{0,250}\.npz")  # used with fullmatch


class BundleError(StoreError):
    """A bundle that cannot be trusted or read; the message names the file and what differs."""


class TrustError(BundleError):
    """Trust asked for and not given: an unsigned run or bundle, or a signature that does not
    verify or is not by a trusted key. ``verify`` and ``compare`` print it ``NOT VERIFIED``
    and exit 1 (a refusal of the evidence, not bad input)."""


# --- writing -----------------------------------------------------------------------------------


def bundle_members(run_dir: Path) -> list[str]:
    """Relative paths that go into a bundle, sorted: manifest, results, artifacts/*.npz."""
    from harness.store.safe_output import UnsafeOutput, check_run_path

    run_dir = Path(run_dir)
    try:  # a linked manifest, results or artifacts folder would pack a file the run does not own
        for rel in (MANIFEST, RESULTS, ARTIFACTS):
            check_run_path(run_dir, rel)
    except UnsafeOutput as err:
        raise StoreError(str(err)) from None
    if not (run_dir / MANIFEST).is_file():
        raise StoreError(f"{run_dir}: not a run directory (no {MANIFEST})")
    names = [MANIFEST]
    if (run_dir / RESULTS).is_file():
        names.append(RESULTS)
    art = run_dir / ARTIFACTS
    if art.is_dir():
        for path in sorted(art.iterdir()):
            rel = f"{ARTIFACTS}/{path.name}"
            if path.is_file() and not path.is_symlink() and path.suffix == ".npz" and not path.name.startswith("."):
                if not _ARTIFACT_NAME.fullmatch(rel):
                    raise StoreError(f"{path}: artifact name cannot go into a bundle (unexpected characters)")
                names.append(rel)
    return sorted(names)


def determinism_summary(records: list[Any]) -> dict[str, Any]:
    """The determinism flags records say were in force: one value per flag when all agree,
    else the sorted distinct values (``num_threads`` varies with the threads axis)."""
    seen: dict[str, set[str]] = {}
    for r in records:
        for key, value in _flatten(r.determinism).items():
            seen.setdefault(key, set()).add(json.dumps(value, sort_keys=True))
    out: dict[str, Any] = {}
    for key in sorted(seen):
        values = [json.loads(v) for v in sorted(seen[key])]
        out[key] = values[0] if len(values) == 1 else values
    return out


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _zipinfo(name: str, size: int) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3
    info.external_attr = 0o100644 << 16
    info.file_size = size
    return info


def default_bundle_path(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    return run_dir.resolve().parent / f"{run_dir.resolve().name}{BUNDLE_SUFFIX}"


def write_bundle(
    run_dir: str | Path, out: str | Path | None = None, *, verify_artifacts: bool = True, sign_key: Any = None
) -> Path:
    """Pack ``run_dir`` into ``out`` (default ``<run>.bundle.zip`` next to it), atomically.

    With ``verify_artifacts`` every artifact referenced by a record is read and checked
    against the record's digests first: a bundle is a reference, it must not carry a
    corrupted artifact."""
    run_dir = Path(run_dir)
    names = bundle_members(run_dir)
    store = RunStore(run_dir)
    manifest = store.manifest()  # readable, not newer than this harness
    try:  # a run another process is still writing would give a torn bundle
        store.lock()
        store.unlock()
    except RunLocked:
        raise StoreError(
            f"{run_dir}: the run is still being written (its lock is held); bundle it when it has finished"
        ) from None
    except OSError:
        pass  # a read-only copy of a run: nobody can be writing it here
    loaded = store.load_records()
    if verify_artifacts:
        present = set(names)
        for r in loaded.records:
            if r.status == "ok" and r.artifact and r.artifact not in present:
                raise StoreError(f"{run_dir}: artifact {r.artifact} of {r.cell_id} is missing; cannot bundle this run")
        # the evidence check (complete, verified, no foreign records) runs in `harness bundle`
        # (harness.cli.cert) before this: it needs the matrix, which the store does not know
    files = {name: sha256_file(run_dir / name) for name in names}
    doc = {
        "bundle_schema_version": BUNDLE_SCHEMA_VERSION,
        "files": files,
        "manifest_sha256": files[MANIFEST],
        "summary": {
            "run_id": manifest.run_id if "run_id" in manifest.model_fields_set else run_dir.name,
            "records": len(loaded.records),
            "environment": manifest.environment if "environment" in manifest.model_fields_set else {},
            "determinism": determinism_summary([r for r in loaded.records if r.status == "ok"]),
        },
    }
    if sign_key is not None:
        from harness.store.signing import sign_document

        doc = sign_document(doc, sign_key)
    bundle_json = (json.dumps(doc, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
    out_path = Path(out) if out else default_bundle_path(run_dir)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out_path) as fh:
        with zipfile.ZipFile(fh, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr(_zipinfo(BUNDLE_JSON, len(bundle_json)), bundle_json)
            for name in names:
                path = run_dir / name
                size = path.stat().st_size
                with (
                    open_in_run(run_dir, name, "rb") as src,
                    zf.open(_zipinfo(name, size), "w", force_zip64=size >= zipfile.ZIP64_LIMIT) as dst,
                ):
                    shutil.copyfileobj(src, dst, _CHUNK)
        _append_trailer(fh)
        if sha256_file(run_dir / MANIFEST) != files[MANIFEST]:
            raise StoreError(f"{run_dir}: {MANIFEST} changed while bundling; is the run still being written?")
    return out_path


def _append_trailer(fh: IO[bytes]) -> None:
    """Set the zip comment to the sha256 of every byte before the comment-length field."""
    fh.seek(0, os.SEEK_END)
    size = fh.tell()
    fh.seek(size - 2)
    if fh.read(2) != b"\x00\x00":
        raise RuntimeError("zip writer left a comment; cannot add the bundle trailer")
    h = hashlib.sha256()
    fh.seek(0)
    remaining = size - 2
    while remaining:
        block = fh.read(min(_CHUNK, remaining))
        h.update(block)
        remaining -= len(block)
    fh.seek(size - 2)
    fh.write(struct.pack("<H", TRAILER_LEN) + TRAILER_PREFIX + h.hexdigest().encode())


# --- reading -----------------------------------------------------------------------------------


def _check_member_name(bundle: Path, name: str) -> None:
    p = PurePosixPath(name)
    if (
        name.startswith("/")
        or "\\" in name
        or p.is_absolute()
        or ".." in p.parts
        or "" in name.split("/")
        or re.match(r"^[A-Za-z]:", name)
    ):
        raise BundleError(f"bundle {bundle}: member {name!r} has an unsafe path (absolute or '..'); refused")
    if name not in (BUNDLE_JSON, MANIFEST, RESULTS) and not _ARTIFACT_NAME.fullmatch(name):
        raise BundleError(
            f"bundle {bundle}: unknown member {name!r} (a bundle holds only bundle.json, "
            f"manifest.json, results.jsonl and artifacts/*.npz)"
        )


def _trailer_digest(bundle: Path, size: int) -> str:
    """Check the archive digest in the trailer; return the sha256 of the whole file."""
    with open(bundle, "rb") as fh:
        if size < TRAILER_LEN + 22:
            raise BundleError(f"bundle {bundle}: too short to be a bundle ({size} bytes)")
        fh.seek(size - TRAILER_LEN - 2)
        tail = fh.read(TRAILER_LEN + 2)
        length, comment = struct.unpack("<H", tail[:2])[0], tail[2:]
        if length != TRAILER_LEN or not comment.startswith(TRAILER_PREFIX):
            raise BundleError(
                f"bundle {bundle}: its archive trailer (zip comment with the archive sha256) is "
                f"missing or changed; not a bundle written by `harness bundle`, or altered"
            )
        recorded = comment[len(TRAILER_PREFIX) :].decode("ascii", "replace")
        h, whole = hashlib.sha256(), hashlib.sha256()
        fh.seek(0)
        remaining = size - TRAILER_LEN - 2
        while remaining:
            block = fh.read(min(_CHUNK, remaining))
            if not block:
                raise BundleError(f"bundle {bundle}: file shrank while being read")
            h.update(block)
            whole.update(block)
            remaining -= len(block)
        whole.update(tail)
    actual = h.hexdigest()
    if actual != recorded:
        raise BundleError(
            f"bundle {bundle}: archive bytes changed outside the members' contents (archive sha256 "
            f"{actual[:16]}... != recorded {recorded[:16]}...); refused"
        )
    return whole.hexdigest()


def _read_bundle_json(bundle: Path, zf: zipfile.ZipFile) -> dict[str, Any]:
    try:
        raw = zf.read(BUNDLE_JSON)
    except zipfile.BadZipFile as err:
        raise BundleError(f"bundle {bundle}: {BUNDLE_JSON} is corrupted ({err})") from None
    try:
        doc = strict_json_loads(raw)
    except ValueError as err:  # not JSON, or not one value (a duplicate key, NaN)
        raise BundleError(f"bundle {bundle}: {BUNDLE_JSON} is not valid JSON ({err})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("files"), dict):
        raise BundleError(f"bundle {bundle}: {BUNDLE_JSON} has no 'files' table")
    try:
        check_version(doc.get("bundle_schema_version"), BUNDLE_SCHEMA_VERSION, f"bundle {bundle}: {BUNDLE_JSON}")
    except StoreError as err:
        raise BundleError(str(err).replace("schema_version", "bundle_schema_version", 1)) from None
    return doc


def verify_bundle(
    bundle: str | Path, extract_to: str | Path | None = None, trusted_keys: set[str] | None = None
) -> dict[str, Any]:
    """Check every member and every byte of ``bundle``; with ``extract_to`` also write the
    members there (each checked as it is written). Returns bundle.json plus
    ``bundle_sha256`` (the sha256 of the whole file, what ``sha256sum`` prints) and
    ``signed_by`` (``unsigned`` or the signing key). A signature must verify; with
    ``trusted_keys`` (default: ``$HARNESS_TRUSTED_KEYS``) it must exist and be by one of them. Raises BundleError on
    any mismatch -- also for damage the zip reader trips over in unexpected ways."""
    bundle = Path(bundle)
    try:
        return _verify(bundle, extract_to, trusted_keys)
    except BundleError:
        raise
    except Exception as err:  # a damaged archive can fail anywhere inside zipfile
        raise BundleError(f"bundle {bundle}: unreadable or altered archive ({type(err).__name__}: {err})") from None


def _verify(bundle: Path, extract_to: str | Path | None, trusted_keys: set[str] | None) -> dict[str, Any]:
    import stat as stat_mod

    try:
        st = bundle.stat()
    except FileNotFoundError:
        raise BundleError(f"bundle {bundle}: not found") from None
    size = st.st_size
    if bundle.is_dir():
        raise BundleError(f"bundle {bundle}: is a directory, not a bundle file")
    if not stat_mod.S_ISREG(st.st_mode):  # a FIFO would block the zip reader forever
        raise BundleError(f"bundle {bundle}: not a regular file (a FIFO or device?)")
    try:
        zf = zipfile.ZipFile(bundle, "r")
    except Exception as err:
        raise BundleError(f"bundle {bundle}: not a readable bundle archive ({type(err).__name__}: {err})") from None
    with zf:
        infos = zf.infolist()
        seen: set[str] = set()
        for info in infos:
            _check_member_name(bundle, info.filename)
            if info.filename in seen:
                raise BundleError(f"bundle {bundle}: member {info.filename!r} appears twice")
            seen.add(info.filename)
            if info.compress_type != zipfile.ZIP_STORED:
                raise BundleError(
                    f"bundle {bundle}: member {info.filename!r} is compressed; bundles store members uncompressed"
                )
        _check_no_overlap(bundle, infos, size)
        if BUNDLE_JSON not in seen:
            raise BundleError(f"bundle {bundle}: no {BUNDLE_JSON}; not a bundle written by `harness bundle`")
        doc = _read_bundle_json(bundle, zf)
        doc["signed_by"] = _check_signature(bundle, doc, trusted_keys)
        files: dict[str, Any] = doc["files"]
        for name in sorted(files):
            _check_member_name(bundle, name)
        members = seen - {BUNDLE_JSON}
        missing, extra = sorted(set(files) - members), sorted(members - set(files))
        if missing:
            raise BundleError(f"bundle {bundle}: {missing[0]} is listed in {BUNDLE_JSON} but missing from the archive")
        if extra:
            raise BundleError(f"bundle {bundle}: {extra[0]} is in the archive but not listed in {BUNDLE_JSON}")
        for required in (MANIFEST,):
            if required not in files:
                raise BundleError(f"bundle {bundle}: no {required}")
        if doc.get("manifest_sha256") != files[MANIFEST]:
            raise BundleError(f"bundle {bundle}: manifest_sha256 in {BUNDLE_JSON} does not match its files table")
        dest = Path(extract_to) if extract_to is not None else None
        if dest is not None:
            (dest / ARTIFACTS).mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            _verify_member(bundle, zf, name, str(files[name]), dest)
    doc["bundle_sha256"] = _trailer_digest(bundle, size)
    return doc


def _check_signature(bundle: Path, doc: dict[str, Any], trusted_keys: set[str] | None) -> str:
    from harness.store.signing import SignatureError, check_document, load_trusted_keys

    try:
        trusted = trusted_keys if trusted_keys is not None else load_trusted_keys(None)
        return check_document(doc, trusted, f"bundle {bundle}").label
    except SignatureError as err:
        raise TrustError(str(err)) from None


def _check_no_overlap(bundle: Path, infos: list[zipfile.ZipInfo], size: int) -> None:
    """Members must occupy disjoint byte ranges inside the file (Python 3.11's zipfile does
    not check; overlapping members turn a small file into a large extraction)."""
    spans = []
    for info in infos:
        end = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size
        if info.file_size != info.compress_size or end > size:
            raise BundleError(f"bundle {bundle}: member {info.filename!r} claims more bytes than the archive holds")
        spans.append((info.header_offset, end, info.filename))
    spans.sort()
    for (_, a1, an), (b0, _, bn) in itertools.pairwise(spans):
        if b0 < a1:
            raise BundleError(f"bundle {bundle}: members {an!r} and {bn!r} overlap (a zip bomb?); refused")


def _verify_member(bundle: Path, zf: zipfile.ZipFile, name: str, expected: str, dest: Path | None) -> None:
    h = hashlib.sha256()
    out = open(dest / name, "wb") if dest is not None else None  # noqa: SIM115 (closed in the finally below)
    try:
        with zf.open(name) as src:
            for block in iter(lambda: src.read(_CHUNK), b""):
                h.update(block)
                if out is not None:
                    out.write(block)
    except zipfile.BadZipFile as err:
        if "CRC" in str(err):  # stored bytes changed: the zip CRC notices before the sha256 does
            raise BundleError(
                f"bundle {bundle}: {name} changed (zip CRC mismatch; its bytes no longer match the "
                f"recorded sha256 {expected[:16]}...)"
            ) from None
        raise BundleError(f"bundle {bundle}: {name} is corrupted ({err})") from None
    except Exception as err:  # a changed header, an "encrypted" flag ...
        raise BundleError(f"bundle {bundle}: {name} is corrupted ({type(err).__name__}: {err})") from None
    finally:
        if out is not None:
            out.close()
    actual = h.hexdigest()
    if actual != expected:
        raise BundleError(f"bundle {bundle}: {name} changed (sha256 {actual[:16]}... != recorded {expected[:16]}...)")


@dataclass
class OpenedRun:
    """A run to read: a run directory as is, or a verified bundle extracted into a private
    temporary folder (removed by ``close()`` / leaving the ``with`` block)."""

    store: RunStore
    source: Path
    bundle: dict[str, Any] | None = None  # bundle.json (+ bundle_sha256) when opened from a bundle
    _tmp: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @property
    def is_bundle(self) -> bool:
        return self.bundle is not None

    @property
    def signed_by(self) -> str | None:
        """``unsigned`` or ``signed by ed25519:<key id> ...`` for a bundle; None for a directory."""
        return self.bundle.get("signed_by") if self.bundle else None

    @property
    def bundle_sha256(self) -> str | None:
        return self.bundle.get("bundle_sha256") if self.bundle else None

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> OpenedRun:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_bundle(bundle: str | Path, trusted_keys: set[str] | None = None) -> OpenedRun:
    """Verify ``bundle`` and extract it; ``.store`` is a RunStore on the extracted run."""
    tmp = tempfile.TemporaryDirectory(prefix="harness-bundle-")
    try:
        doc = verify_bundle(bundle, extract_to=Path(tmp.name) / "run", trusted_keys=trusted_keys)
        store = RunStore(Path(tmp.name) / "run")
        try:
            store.manifest()
            store.load_records()  # a newer record version is refused here, naming the bundle
        except StoreError as err:  # name the bundle, not the private extraction folder
            raise BundleError(str(err).replace(str(Path(tmp.name) / "run"), f"bundle {bundle}")) from None
    except BaseException:
        tmp.cleanup()
        raise
    return OpenedRun(store=store, source=Path(bundle), bundle=doc, _tmp=tmp)


def open_run_or_bundle(path: str | Path, trusted_keys: set[str] | None = None) -> OpenedRun:
    """A run directory or a bundle file, for reading (use as a context manager)."""
    path = Path(path)
    if path.is_dir():
        if trusted_keys is not None:  # a directory carries no signature: trust cannot be shown
            raise TrustError(
                f"{path}: a run directory is unsigned, but trusted keys were given: refused "
                f"(make a signed bundle with `harness bundle {path} --sign KEY`)"
            )
        store = RunStore(path)
        store.manifest()
        return OpenedRun(store=store, source=path)
    if not path.exists():
        raise StoreError(f"{path}: no such run directory or bundle")
    return open_bundle(path, trusted_keys)
