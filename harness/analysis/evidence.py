"""The evidence check with the matrix expanded: what every gate, bundle and certificate uses.

harness.store.evidence checks records against a set of expected cells; expanding the
manifest's matrix into those cells needs harness.spec, which the store may not import, so
the two meet here.
"""

from __future__ import annotations

from typing import Any

from harness.store.evidence import Evidence, check_evidence
from harness.store.records import Record
from harness.store.run import RunStore, StoreError


def expected_cells(manifest: Any) -> dict[str, Any] | None:
    """cell id -> Cell for the matrix the manifest records, or None when it records none."""
    from harness.spec.matrix import Matrix, MatrixSpec, expand

    manifest = manifest.to_doc() if hasattr(manifest, "to_doc") else manifest
    doc = manifest.get("matrix")
    if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict) or not isinstance(doc.get("tasks"), dict):
        return None
    from pydantic import ValidationError

    from harness.store.manifest import first_field_problem

    try:
        spec = MatrixSpec.model_validate(doc["spec"])
    except ValidationError as err:  # the field, not pydantic's "1 validation error for MatrixSpec"
        raise StoreError(f"manifest matrix cannot be expanded ({first_field_problem(err, 'matrix.spec')})") from None
    try:
        matrix = Matrix(spec=spec, source=None, tasks={k: (v["kind"], v["task"]) for k, v in doc["tasks"].items()})
        devices = manifest.get("devices") or ["cpu"]
        cells = expand(matrix, list(devices), max_cells=10**6)
    except Exception as err:  # a manifest whose matrix no longer expands cannot vouch for anything
        first = (str(err).strip().splitlines() or [""])[0]
        raise StoreError(f"manifest matrix cannot be expanded ({type(err).__name__}: {first})") from None
    return {c.cell_id: c for c in cells}


def gather(
    store: RunStore, manifest: Any, records: list[Record], load_problems: list[str], verify: bool = True
) -> Evidence:
    from harness.spec.kinds import KINDS

    discrete = {}
    for name in KINDS.names():
        spec = KINDS.get(name)
        discrete[name] = None if getattr(spec, "upstream_discrete", None) else spec.discrete
    return check_evidence(
        store, manifest, records, load_problems, verify, cells=expected_cells(manifest), discrete=discrete
    )
