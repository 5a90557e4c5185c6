"""JSON Schema files generated from the task models and shipped in the package.

Why generated: one source of truth. ``harness schema KIND`` prints a schema; a test fails when
the files in harness/schemas/ are stale (regenerate with ``harness schema --write``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.spec.kinds import KINDS

SCHEMA_DIR = Path(__file__).parent.parent / "schemas"


def file_names() -> dict[str, str]:
    """Kind -> shipped schema file name, for the kinds that ship one (see harness.spec.kinds)."""
    return {kind: file for kind in KINDS.names() if (file := KINDS.get(kind).schema_file)}


def schema_for(kind: str) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(KINDS.names())}")
    schema = KINDS.get(kind).task_class().model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def schema_text(kind: str) -> str:
    return json.dumps(schema_for(kind), indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path = SCHEMA_DIR) -> list[Path]:
    from harness.store.files import atomic_write_bytes

    written = []
    for kind, name in file_names().items():
        atomic_write_bytes(folder / name, schema_text(kind).encode())
        written.append(folder / name)
    return written


def stale_schemas(folder: Path = SCHEMA_DIR) -> list[str]:
    """Names of shipped schema files that differ from what the models generate now."""
    stale = []
    for kind, name in file_names().items():
        path = folder / name
        if not path.exists() or path.read_text() != schema_text(kind):
            stale.append(name)
    return stale
