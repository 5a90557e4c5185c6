"""JSON Schema files generated from the task models and shipped in the package.

Why generated: one source of truth. ``harness schema KIND`` prints a schema; a test fails when
the files in harness/schemas/ are stale (regenerate with ``harness schema --write``).
"""

from __future__ import annotations

import json
from pathlib import Path

from harness.spec.tasks import TASK_MODELS

SCHEMA_DIR = Path(__file__).parent.parent / "schemas"
FILE_NAMES = {"audio": "text-to-audio-task.schema.json", "gpt": "gpt-inference-task.schema.json",
              "audioldm": "audioldm-task.schema.json", "chain": "chain-task.schema.json"}


def schema_for(kind: str) -> dict:
    if kind not in TASK_MODELS:
        raise ValueError(f"unknown task kind {kind!r}; expected one of {', '.join(TASK_MODELS)}")
    schema = TASK_MODELS[kind].model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def schema_text(kind: str) -> str:
    return json.dumps(schema_for(kind), indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path = SCHEMA_DIR) -> list[Path]:
    from harness.store.run import atomic_write_bytes

    written = []
    for kind, name in FILE_NAMES.items():
        atomic_write_bytes(folder / name, schema_text(kind).encode())
        written.append(folder / name)
    return written


def stale_schemas(folder: Path = SCHEMA_DIR) -> list[str]:
    """Names of shipped schema files that differ from what the models generate now."""
    stale = []
    for kind, name in FILE_NAMES.items():
        path = folder / name
        if not path.exists() or path.read_text() != schema_text(kind):
            stale.append(name)
    return stale
