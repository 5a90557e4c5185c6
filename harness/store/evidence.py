"""The evidence check: a gate passes only on complete, verified evidence.

Why one check, apart from the verdicts: a verdict judges the outputs it is shown; it cannot see
what is missing, forged or foreign. Before this check a run interrupted at 5 of 24 cells
gated 0, an artifact flipped, emptied or swapped left ``report --gate`` at ``ready``, a
copied digest made a divergent pair bitwise, and records from another run became an extra
configuration. Here every one of these is a problem line, and any problem fails the gate:

- complete: every cell the manifest's matrix expands to has a final record, the matrix has at
  least one cell, and the run finished (a ``running`` manifest whose lock no live process
  holds is reported as ``interrupted``);
- no duplicates or foreign records: at most one ``ok`` record per cell, and every record's
  cell, spec hash and configuration belong to this run's matrix;
- verified: every ok record's artifact is read (after its structure is checked), every array
  digest matches, the derived ``output`` / ``tokens`` / ``response`` digests are recomputed
  from the arrays and the stored response, and the record's receipt chain holds;
- readable: no unreadable or torn lines in results.jsonl.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from pydantic import BaseModel, Field

from harness.digests import digest_array, digest_json
from harness.store.receipts import link_values, verify_receipt
from harness.store.records import Record
from harness.store.run import RunLocked, RunStore, StoreError
from harness.vocabulary import CURRENT_STACK

MAX_LINES = 20  # problem lines kept per family; the rest are counted


class Evidence(BaseModel):
    """What the evidence check found; ``ok`` only when nothing is missing, broken or foreign."""

    status: str = "unknown"  # the run's status as it really is (complete | running | interrupted | ...)
    expected_cells: int | None = None
    final_cells: int = 0
    missing: int = 0
    foreign: int = 0
    duplicates: int = 0
    unreadable_lines: int = 0
    artifacts_checked: int = 0
    receipts_checked: int = 0
    verified: bool = False
    problems: list[str] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def run_status(store: RunStore, manifest: Any) -> str:
    """``manifest['status']``, except that ``running`` with nobody holding the lock is
    ``interrupted`` (SIGKILL of the main process or a full disk leave ``running`` behind)."""
    manifest = manifest.to_doc() if hasattr(manifest, "to_doc") else manifest
    status = manifest.get("status") or "unknown"
    if status != "running":
        return status
    if store._lock is not None:  # this process is the writer
        return status
    try:
        store.lock()
    except RunLocked:
        return "running"
    except (OSError, StoreError):
        return "interrupted"
    store.unlock()
    return "interrupted"


def _derived(r: Record, arrays: dict[str, Any], discrete: dict[str, str | None]) -> list[str]:
    """Recompute output/tokens/response digests; one line per one that does not match."""
    bad = []
    d = r.digests
    response = r.output.get("response")
    if "response" in d:
        if response is None:
            bad.append("response digest has no stored response to check it against")
        elif digest_json(response) != d["response"]:
            bad.append("response digest does not match the stored response")
    if "output" in d:
        if "response" in d:
            want = d.get("response")
        else:
            want = digest_array(arrays["waveform"]) if "waveform" in arrays else None
        if want is None or d["output"] != want:
            bad.append("output digest does not match the artifact")
    if "tokens" in d and discrete.get(r.kind):  # kinds whose tokens cover one array (a chain's cover two)
        name = discrete[r.kind]
        if name not in arrays or digest_array(arrays[name]) != d["tokens"]:
            bad.append("tokens digest does not match the artifact")
    return bad


class _Lines:
    def __init__(self) -> None:
        self.by_family: dict[str, list[str]] = defaultdict(list)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, family: str, line: str) -> None:
        self.counts[family] += 1
        if len(self.by_family[family]) < MAX_LINES:
            self.by_family[family].append(line)

    def flat(self) -> list[str]:
        out = []
        for family, lines in self.by_family.items():
            out += lines
            if self.counts[family] > len(lines):
                out.append(f"... and {self.counts[family] - len(lines)} more {family} problem(s)")
        return out


def check_evidence(
    store: RunStore,
    manifest: Any,
    records: list[Record],
    load_problems: list[str],
    verify: bool = True,
    *,
    cells: dict[str, Any] | None = None,
    discrete: dict[str, str | None] | None = None,
) -> Evidence:
    """``manifest``: the typed Manifest or its JSON document; ``cells``: cell id -> Cell of the
    manifest's matrix (harness.analysis.evidence expands it; the store does not know matrices),
    None when the manifest records no matrix."""
    manifest = manifest.to_doc() if hasattr(manifest, "to_doc") else manifest
    ev = Evidence(status=run_status(store, manifest), unreadable_lines=len(load_problems))
    lines = _Lines()
    for p in load_problems:
        lines.add("unreadable line", p)
    if ev.status != "complete":
        lines.add(
            "status",
            f"run status is {ev.status!r}, not complete"
            + ("; finish it with `harness run MATRIX --resume`" if ev.status == "interrupted" else ""),
        )
    by_cell: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_cell[r.cell_id].append(r)
    if cells is None:
        lines.add("matrix", "the manifest records no matrix: completeness cannot be checked")
    else:
        ev.expected_cells = len(cells)
        if not cells:
            lines.add("matrix", "the matrix has no cells (excludes removed every one): nothing was tested")
        for cell_id in cells:
            if cell_id not in by_cell:
                ev.missing += 1
                lines.add("missing", f"{cell_id}: no record (the run is incomplete)")
        for cell_id, recs in by_cell.items():
            cell = cells.get(cell_id)
            bad = [r for r in recs if cell is None or r.spec_hash != cell.spec_hash or r.config_id != cell.config_id]
            if bad:
                ev.foreign += len(bad)
                lines.add(
                    "foreign",
                    f"{cell_id}: record(s) not from this run's matrix (foreign cell, spec hash or configuration)",
                )
    ev.final_cells = sum(1 for recs in by_cell.values() if recs)
    for cell_id, recs in by_cell.items():
        ok = [r for r in recs if r.status == "ok"]
        if len(ok) > 1:
            ev.duplicates += len(ok) - 1
            differ = len({digest_json(r.digests) for r in ok}) > 1
            lines.add("duplicate", f"{cell_id}: {len(ok)} ok records" + (" with different outputs" if differ else ""))
    if verify:
        _verify_records(store, manifest, records, cells, ev, lines, discrete or {})
        ev.verified = True
    else:
        lines.add("unverified", "artifacts and receipts were not verified (--no-verify): the gate cannot pass")
    ev.problems = lines.flat()
    return ev


def _verify_records(
    store: RunStore,
    manifest: dict[str, Any],
    records: list[Record],
    cells: dict[str, Any] | None,
    ev: Evidence,
    lines: _Lines,
    discrete: dict[str, str | None],
) -> None:
    for r in records:
        if r.status != "ok":
            continue
        if not r.artifact:
            lines.add("artifact", f"{r.cell_id}: ok record without an artifact")
            continue
        try:
            arrays = store.load_artifact(r.artifact, r.digests)
        except StoreError as err:
            lines.add("artifact", f"{r.cell_id}: {err}")
            continue
        ev.artifacts_checked += 1
        for line in _derived(r, arrays, discrete):
            lines.add("digest", f"{r.cell_id}: {line}")
        # receipts are required from record schema 2 on, and for every record of a run whose
        # manifest says it was made with receipts (so relabelling a record as schema 1 skips nothing)
        if r.schema_version >= 2 or r.receipt is not None or manifest.get("receipt_version"):
            cell = (cells or {}).get(r.cell_id)
            if cell is None:
                continue  # already a foreign record
            outputs = {k: digest_array(v) for k, v in arrays.items()}
            outputs.update({k: v for k, v in r.digests.items() if k in ("output", "tokens", "response")})
            values = link_values(
                r.model_dump(mode="json"),
                cell.task_doc,
                manifest.get("harness_version"),
                manifest.get("environment"),
                outputs,
                # another stack's executions ran with their own libraries (record schema 4); the
                # current stack's are the manifest's environment, and its records must say the same
                r.libraries if r.axes.stack != CURRENT_STACK else None,
            )
            problem = verify_receipt(r.receipt, values)
            if problem is None and r.libraries is not None and r.libraries != values["libraries"]:
                problem = "its libraries are not the run environment's (edited after the run?)"
            ev.receipts_checked += 1
            if problem:
                lines.add("receipt", f"{r.cell_id}: {problem}")
