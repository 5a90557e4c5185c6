"""The run manifest (manifest.json): typed, versioned, upgradable, with checked metadata.

Why typed: six modules used to read the manifest through ``.get(...).get(...)`` chains, so a
renamed field failed silently as an empty default. Why checked metadata (as pyperf checks
metadata before it merges benchmark runs): records made by another harness version, from
another matrix or on other tiny-model weights must not be merged into one run (``--resume``),
and two runs built on different weights for the same ``tiny:`` name differ by construction, so
comparing their outputs would only say so; both are refused with a line naming the field.

History of ``MANIFEST_SCHEMA_VERSION`` (asv style: bump it when a field changes meaning and
add ``update_to_N`` below, which turns a version N-1 document into version N):
  1 -- first version (harness version, run id, matrix and its digest, environment
       fingerprint, tiny-model weight hashes, devices, status, times).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from harness.errors import StoreError

MANIFEST_SCHEMA_VERSION = 1

#: version N -> the function that turns a version N-1 manifest into version N (none yet)
MANIFEST_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}

#: metadata that must agree before records are merged into one run (``--resume``)
CHECKED_ON_MERGE = ("harness_version", "matrix_digest", "tiny_models")
#: metadata that must agree before two runs' outputs are compared
CHECKED_ON_COMPARE = ("tiny_models",)


def first_field_problem(err: ValidationError, prefix: str = "") -> str:
    """``<prefix>.<dotted location>: <message>`` of the first problem of ``err``: how a manifest
    field that does not validate is named (``environment.libraries: Input should be ...``)."""
    first = err.errors(include_url=False)[0]
    field = ".".join(str(p) for p in ((prefix,) if prefix else ()) + tuple(first["loc"])) or "$"
    return f"{field}: {first['msg']}"


class EnvironmentDoc(BaseModel):
    """The shape of an environment fingerprint (``harness.execution.env.fingerprint``), checked
    when a manifest is read: reports, receipts and node tables index into it, so a
    ``libraries`` that is a number was a ``TypeError`` naming nothing. Every field is
    optional (older runs lack some) and unknown ones are kept."""

    model_config = ConfigDict(extra="allow")

    hostname_hash: str | None = None
    os: str | None = None
    python: str | None = None
    machine: str | None = None
    processor: str | None = None
    cpu_count: int | None = None
    torch_threads: int | None = None
    libraries: dict[str, str | None] = Field(default_factory=dict)
    torch: str | None = None
    cuda_available: bool | None = None
    cuda_runtime: str | None = None
    cudnn: int | None = None
    gpu_names: list[str] = Field(default_factory=list)
    gpu_capability: list[list[int]] | None = None
    gpu_memory_bytes: list[int] | None = None
    driver: str | None = None
    blas: str | None = None


class Manifest(BaseModel):
    """A run's manifest. Unknown fields are kept (``extra="allow"``) so a manifest written by
    a tool that adds fields survives a rewrite by this harness."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = MANIFEST_SCHEMA_VERSION
    harness_version: str | None = None
    run_id: str | None = None
    created_at: float | None = None
    finished_at: float | None = None
    status: str | None = None  # running | complete | interrupted
    matrix: dict[str, Any] = Field(default_factory=dict)  # harness.spec.matrix.Matrix.to_doc()
    matrix_digest: str | None = None
    environment: dict[str, Any] | None = None  # harness.execution.env.fingerprint() of the workers
    tiny_models: dict[str, str] = Field(default_factory=dict)  # "tiny:name" -> weights sha256
    devices: list[str] | None = None
    nodes: dict[str, dict[str, Any]] | None = None  # node key -> who, cpus/gpus, env_class, environment (fleets)
    execution: list[dict[str, Any]] | None = None  # one entry per run or resume: executor, parallel, workers at once
    # the software stacks the cells ran under (harness.execution.stacks): how each was made, what
    # it installs, the libraries it showed, why it could not run; and each one's environment class
    stacks: dict[str, dict[str, Any]] | None = None
    stack_classes: dict[str, str] | None = None

    @field_validator("environment")
    @classmethod
    def _environment_shape(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            EnvironmentDoc.model_validate(value)  # checked, kept as read
        return value

    @field_validator("nodes")
    @classmethod
    def _node_environment_shape(cls, value: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        for key, node in (value or {}).items():
            if node.get("environment") is not None:
                try:
                    EnvironmentDoc.model_validate(node["environment"])
                except ValidationError as err:
                    raise ValueError(f"node {key[:12]}: {first_field_problem(err, 'environment')}") from None
        return value

    @property
    def matrix_spec(self) -> dict[str, Any]:
        """The matrix's spec document (name, axes, thresholds, gates ...); {} when absent."""
        spec = self.matrix.get("spec")
        return spec if isinstance(spec, dict) else {}

    @property
    def matrix_tasks(self) -> dict[str, Any]:
        """The matrix's resolved tasks, name -> {"kind", "task"}; {} when absent."""
        tasks = self.matrix.get("tasks")
        return tasks if isinstance(tasks, dict) else {}

    @property
    def matrix_name(self) -> str:
        return str(self.matrix_spec.get("name", "?"))

    def to_doc(self) -> dict[str, Any]:
        """The JSON document (only the fields that were set, unknown fields included)."""
        return self.model_dump(exclude_unset=True)  # python mode: values stay exactly as read


def parse_manifest(doc: dict[str, Any], where: str) -> Manifest:
    """A manifest document, upgraded to this version and validated; one line when invalid."""
    from harness.store.files import upgrade

    doc = upgrade(doc, MANIFEST_SCHEMA_VERSION, MANIFEST_UPGRADES, where)
    try:
        return Manifest.model_validate(doc)
    except ValidationError as err:
        raise StoreError(f"{where}: manifest field {first_field_problem(err)}") from None


def metadata_conflicts(a: Manifest, b: Manifest, fields: tuple[str, ...]) -> list[str]:
    """One line per checked field on which ``a`` and ``b`` disagree. Tiny models are checked
    name by name, for the names both use; a field either side lacks is not a conflict."""
    out: list[str] = []
    for name in fields:
        va, vb = getattr(a, name), getattr(b, name)
        if name == "tiny_models":
            out += [
                f"tiny model {model} has other weights ({va[model][:12]} vs {vb[model][:12]}); rebuild it with "
                f"`harness tiny` from the same harness version"
                for model in sorted(set(va) & set(vb))
                if va[model] != vb[model]
            ]
        elif va is not None and vb is not None and va != vb:
            differs = f"{name} differs ({va} vs {vb})"
            what = {
                "matrix_digest": "made from a different matrix",
                "harness_version": f"made by harness {va}, this is {vb}",
            }.get(name, differs)
            out.append(what)
    return out


def check_metadata(a: Manifest, b: Manifest, fields: tuple[str, ...], where: str, advice: str = "") -> None:
    """Refuse (StoreError) when ``a`` and ``b`` disagree on a checked field."""
    conflicts = metadata_conflicts(a, b, fields)
    if conflicts:
        raise StoreError(f"{where}: {'; '.join(conflicts)}{advice}")
