"""Run directories: manifest.json, results.jsonl (append-only) and artifacts/*.npz.

Results are data users keep, so: every file carries a schema version and newer versions are
refused; records are appended one line at a time, flushed and fsynced, so a crash loses at
most the line being written; a torn last line is set aside (never glued to the next record)
and the readable part still loads; artifacts are npz without pickle, written atomically, and
checked against the digests in their record; one process at a time holds a run's lock.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import numpy as np

from harness.digests import StrictJSONError, digest_array, strict_json_loads

# StoreError, atomic_output, atomic_write_bytes and check_version are re-exported for callers of the old path
from harness.errors import StoreError as StoreError
from harness.outputs import npz_bytes
from harness.store.files import atomic_output as atomic_output
from harness.store.files import atomic_write_bytes as atomic_write_bytes
from harness.store.files import atomic_write_json as atomic_write_json
from harness.store.files import check_version as check_version
from harness.store.files import read_json_file as read_json_file
from harness.store.manifest import MANIFEST_SCHEMA_VERSION as MANIFEST_SCHEMA_VERSION
from harness.store.manifest import Manifest as Manifest
from harness.store.manifest import parse_manifest as parse_manifest
from harness.store.records import RECORD_SCHEMA_VERSION, Record
from harness.store.safe_output import UnsafeOutput, check_run_path, open_in_run

if TYPE_CHECKING:
    import pandas as pd
    from filelock import BaseFileLock

_P = ParamSpec("_P")
_R = TypeVar("_R")

RESULTS = "results.jsonl"
MANIFEST = "manifest.json"
DERIVED_DIGESTS = ("output", "tokens", "response")  # digests of a record that name no array of its own


def _safe(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run-directory refusals (links, special files) are store errors: one line at the CLI."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return fn(*args, **kwargs)
        except UnsafeOutput as err:
            raise StoreError(str(err)) from None

    return wrapper


ARTIFACTS = "artifacts"


class RunLocked(StoreError):
    pass


@dataclass
class LoadedRecords:
    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # one line each: torn or invalid lines


class RunStore:
    """One run directory. ``lock()`` before writing; readers need no lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: BaseFileLock | None = None

    # --- creation and locking -------------------------------------------------------------
    @classmethod
    @_safe
    def create(cls, path: str | Path, manifest: Manifest | dict[str, Any]) -> RunStore:
        store = cls(path)
        store.path.mkdir(parents=True, exist_ok=True)
        for rel in (ARTIFACTS, RESULTS, MANIFEST):
            check_run_path(store.path, rel)  # no links out of the run directory, no special files
        (store.path / ARTIFACTS).mkdir(exist_ok=True)
        store.lock()
        if not (store.path / RESULTS).exists():  # a fresh run: an older manifest without results describes another run
            manifest = manifest.to_doc() if isinstance(manifest, Manifest) else manifest
            atomic_write_json(store.path / MANIFEST, {"schema_version": MANIFEST_SCHEMA_VERSION, **manifest})
        return store

    def lock(self) -> None:
        from filelock import FileLock, Timeout

        if self._lock is not None:
            return
        lock = FileLock(str(self.path / ".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise RunLocked(
                f"{self.path}: another harness process is writing this run (lock {self.path / '.lock'} "
                f"is held); wait for it or choose another --out"
            ) from None
        self._lock = lock

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # --- manifest ---------------------------------------------------------------------------
    def manifest(self) -> Manifest:
        """The manifest, upgraded to this harness's version and typed (harness.store.manifest)."""
        return parse_manifest(self.manifest_doc(), str(self.path / MANIFEST))

    @_safe
    def manifest_doc(self) -> dict[str, Any]:
        """The manifest as stored (a JSON object whose version this harness can read)."""
        check_run_path(self.path, MANIFEST)
        data = read_json_file(self.path / MANIFEST, "manifest")
        if not isinstance(data, dict):
            raise StoreError(f"{self.path / MANIFEST}: manifest must be a JSON object")
        check_version(data.get("schema_version"), MANIFEST_SCHEMA_VERSION, str(self.path / MANIFEST))
        return data

    @_safe
    def update_manifest(self, **fields: Any) -> None:
        data = self.manifest().to_doc()  # upgraded to this version before it is rewritten
        data.update(fields)
        atomic_write_json(self.path / MANIFEST, data)

    # --- records ----------------------------------------------------------------------------
    @_safe
    def repair_tail(self) -> str | None:
        """A crash mid-write leaves a last line without newline: move it aside so the next
        append starts on a clean line. Returns a message when something was set aside."""
        results = check_run_path(self.path, RESULTS)
        if not results.exists() or results.stat().st_size == 0:
            return None
        with open_in_run(self.path, RESULTS, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 1))
            if fh.read(1) == b"\n":
                return None
            block = min(size, 1 << 20)
            fh.seek(size - block)
            tail = fh.read(block)
            cut = tail.rfind(b"\n")
            keep = size - block + cut + 1 if cut >= 0 else 0
            fh.seek(keep)
            torn = fh.read()
            with open_in_run(self.path, "results.torn.jsonl", "ab") as aside:
                aside.write(torn + b"\n")
            fh.truncate(keep)
            fh.flush()
            os.fsync(fh.fileno())
        return f"{results}: a torn last line ({len(torn)} bytes) was moved to results.torn.jsonl"

    @_safe
    def append(self, record: Record) -> None:
        line = record.model_dump_json() + "\n"
        with open_in_run(self.path, RESULTS, "a") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    @_safe
    def load_records(self) -> LoadedRecords:
        out = LoadedRecords()
        results = check_run_path(self.path, RESULTS)
        if not results.exists():
            return out
        with open_in_run(self.path, RESULTS, "rb") as fh:
            data = fh.read()
        lines = data.split(b"\n")
        enabled = gc.isenabled()
        gc.disable()  # 100k records allocate millions of objects; collector passes dominated
        try:
            for number, raw in enumerate(lines, start=1):
                if raw.strip():
                    self._parse_record(out, results, number, raw, number == len(lines) and not data.endswith(b"\n"))
        finally:
            if enabled:
                gc.enable()
        return out

    @staticmethod
    def _parse_record(out: LoadedRecords, results: Path, number: int, raw: bytes, torn: bool) -> None:
        """Validate one line. Fast path: pydantic parses the JSON itself, and a line that is
        byte for byte what the harness writes for the record it parsed into cannot hold a key
        twice. Any other line is parsed again strictly, which refuses duplicate keys (last-wins
        would let ``"status": "failed", "status": "ok"`` read as ok) and says precisely why a
        line fails (newer version, torn, invalid)."""
        try:
            record = Record.model_validate_json(raw)
            check_version(record.schema_version, RECORD_SCHEMA_VERSION, f"{results}:{number}")
            if record.model_dump_json().encode() == raw.rstrip(b"\r"):
                out.records.append(record)
                return
        except StoreError:
            raise
        except Exception:
            pass
        try:
            doc = strict_json_loads(raw)
            check_version(
                doc.get("schema_version") if isinstance(doc, dict) else None,
                RECORD_SCHEMA_VERSION,
                f"{results}:{number}",
            )
            out.records.append(Record.model_validate(doc))
        except StoreError as err:
            if "newer" in str(err):
                raise
            out.problems.append(str(err))
        except Exception as err:  # invalid JSON or fields: report the line, keep the rest
            kind = "torn last line (a crash mid-write?)" if torn else "unreadable record"
            detail = f": {err}" if isinstance(err, StrictJSONError) else ""
            out.problems.append(f"{results}:{number}: {kind} skipped ({type(err).__name__}{detail})")

    # --- artifacts --------------------------------------------------------------------------
    @_safe
    def write_artifact(self, name: str, arrays: dict[str, np.ndarray]) -> str:
        rel = f"{ARTIFACTS}/{name}.npz"
        check_run_path(self.path, rel)
        atomic_write_bytes(self.path / rel, npz_bytes(arrays))
        return rel

    @_safe
    def load_artifact(self, rel: str, expected: dict[str, str] | None = None) -> dict[str, np.ndarray]:
        """Arrays of an artifact. Its structure is checked before any array is loaded (no
        compressed, overlapping or oversized members, no object dtypes); with ``expected``
        digests every recorded array must be present and match, and no other array may be
        there (an empty or unrelated npz is an error, not silence)."""
        from harness.store.npz_check import BadArtifact, check_npz

        if not isinstance(rel, str) or not rel.startswith(f"{ARTIFACTS}/"):
            raise StoreError(f"{rel}: artifact path leaves the run directory")
        path = check_run_path(self.path, rel)
        try:
            with open_in_run(self.path, rel, "rb"):
                pass
            check_npz(path)
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except FileNotFoundError:
            raise StoreError(f"{path}: artifact missing") from None
        except UnsafeOutput:
            raise
        except BadArtifact as err:
            raise StoreError(f"{path}: artifact refused before loading ({err})") from None
        except Exception as err:
            raise StoreError(f"{path}: artifact unreadable ({type(err).__name__}: {err})") from None
        if expected is not None:
            wanted = {k: v for k, v in expected.items() if k not in DERIVED_DIGESTS}
            missing = sorted(set(wanted) - set(arrays))
            extra = sorted(set(arrays) - set(wanted))
            if missing:
                raise StoreError(f"{path}: array {missing[0]!r} recorded in its record is missing (replaced artifact)")
            if extra:
                raise StoreError(f"{path}: array {extra[0]!r} is not in its record (replaced artifact)")
        for name, digest in (expected or {}).items():
            if name in arrays and digest_array(arrays[name]) != digest:
                raise StoreError(f"{path}: array {name!r} does not match its recorded digest (corrupted artifact)")
        return arrays


def new_run_id(label: str) -> str:
    """UTC start time first, so run folders sort by when they started."""
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + f"-{label}"


def load_run(path: str | Path) -> pd.DataFrame:
    """A run's records as a pandas DataFrame, one row per execution (axes and timings flattened)."""
    import pandas as pd

    store = RunStore(path)
    store.manifest()
    loaded = store.load_records()
    rows = [flatten_record(r) for r in loaded.records]
    frame = pd.DataFrame(rows)
    frame.attrs["problems"] = loaded.problems
    return frame


def flatten_record(r: Record) -> dict[str, Any]:
    row: dict[str, Any] = {
        "cell_id": r.cell_id,
        "spec_hash": r.spec_hash,
        "config_id": r.config_id,
        "task": r.task_name,
        "kind": r.kind,
        "model": r.model,
        "status": r.status,
        "reason": r.reason,
        "output_digest": r.digests.get("output"),
        "tokens_digest": r.digests.get("tokens"),
        "peak_memory_bytes": r.peak_memory_bytes,
        "artifact": r.artifact,
        "node": r.node.key if r.node else None,
        "env_class": r.node.env_class if r.node else None,
    }
    row.update(r.axes.model_dump())
    row.update({f"t_{k}": v for k, v in r.timings.items()})
    return row
