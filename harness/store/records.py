"""The record: one line of results.jsonl per execution of a cell.

Versioned like pyperf's format: ``RECORD_SCHEMA_VERSION`` changes whenever a field changes
meaning; readers refuse newer versions with a clear message instead of misreading them.
History:
  1 -- first version (cell axes, digests, timings, peak memory, warnings, determinism state).
  2 -- ``node``: which machine ran the execution (hostname, Ray node id, environment class);
       ``receipt`` (harness.store.receipts: a digest chaining task, model files, runner,
       libraries, determinism flags, device class, seed and outputs); ``model_meta`` gains
       ``model_files_sha256``. Version 1 records still load (no node, no receipt).
  3 -- ``axes`` gain ``isa`` (the CPU kernel set, harness.isa) and ``tf32``; ``determinism``
       gains ``kernels`` (the kernels in force, read back). Earlier records load as native, tf32 off.
  4 -- ``axes`` gain ``stack`` (the software stack the worker ran under, harness.execution.stacks);
       ``libraries``: the versions the execution ran with (python, torch and the fingerprint's
       libraries: what the receipt's ``libraries`` link binds). Earlier records load as the
       current stack, with no libraries of their own (the manifest's environment says them).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.vocabulary import CURRENT_STACK, Status

RECORD_SCHEMA_VERSION = 4


class Axes(BaseModel):
    """The execution context of a cell that is not part of the task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: str
    quantize_bits: int | None
    seed: int
    device: str
    threads: int | None = None
    batch_size: int = 1
    profile: str = "on"
    load: str = "warm"  # cold: seeded, then the model loaded (a node's first task); warm: loaded, then seeded
    isa: str = "native"  # the CPU kernel set (harness.isa); native: the machine as it is
    tf32: str = "off"  # TF32 matmul on CUDA
    stack: str = CURRENT_STACK  # the software stack (harness.execution.stacks); current: the harness's own
    repeat: int = 0
    worker: int = 0


class Node(BaseModel):
    """The machine that ran an execution. ``key`` tells nodes apart within a run (the Ray node
    id on a fleet, the hostname otherwise); ``env_class`` groups nodes whose environment
    fingerprints agree on what can change outputs (GPU model, driver, CUDA, libraries, CPU)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str
    hostname: str
    ray_node_id: str | None = None
    env_class: str | None = None


IDENTITY_FIELDS = ("cell_id", "spec_hash", "config_id", "task_name", "kind", "model", "axes", "lint")


def identity(cell: dict[str, Any]) -> dict[str, Any]:
    """The fields of a record that say which cell it is (shared by every outcome)."""
    return {k: cell[k] for k in IDENTITY_FIELDS}


class QuantizationDoc(BaseModel):
    model_config = ConfigDict(extra="allow")

    bits: int | None = None
    backend: str | None = None
    quantized_layers: int = 0
    linear_layers: int = 0
    skipped_examples: list[str] = Field(default_factory=list)
    stages: dict[str, QuantizationDoc] | None = None  # a chain: each stage's own report


class ModelMetaDoc(BaseModel):
    """The shape of a record's ``model_meta``, checked when the record is read (the report
    copies ``quantization`` into typed fields; a number there was a ValidationError of the
    report's model, naming nothing). Optional fields, unknown ones kept."""

    model_config = ConfigDict(extra="allow")

    model_path_source: str | None = None
    weights_sha256: str | None = None
    resolved_dtype: str | None = None
    quantization: QuantizationDoc | None = None
    max_positions: int | None = None
    model_files_sha256: dict[str, str | None] = Field(default_factory=dict)  # None: a model with no files


class OutputDoc(BaseModel):
    """The shape of a record's ``output`` facts (``harness.outputs.Output.describe`` plus a
    text task's ``response``): the report sums tokens and seconds from them."""

    model_config = ConfigDict(extra="allow")

    samples: int | None = None
    channels: int | None = None
    audio_seconds: float | None = None
    sampling_rate: int | None = None
    discrete_shape: list[int] | None = None
    new_tokens: int | None = None
    response: dict[str, Any] | None = None


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = RECORD_SCHEMA_VERSION
    cell_id: str
    spec_hash: str  # what was asked (task + axes except repeat/worker): equal spec => equal output expected
    config_id: str  # model x dtype x quant x device x profile: the unit a verdict is given for
    task_name: str
    kind: str
    model: str
    axes: Axes
    status: Status
    reason: str | None = None
    digests: dict[str, str] = Field(default_factory=dict)
    artifact: str | None = None  # path relative to the run directory
    timings: dict[str, float] = Field(default_factory=dict)
    peak_memory_bytes: int | None = None
    memory_kind: str | None = None  # cuda_max_allocated | rss_peak
    warnings: list[str] = Field(default_factory=list)
    nondeterministic_warnings: list[str] = Field(default_factory=list)
    output: dict[str, Any] = Field(default_factory=dict)  # sampling rate, samples, new tokens, ...
    model_meta: dict[str, Any] = Field(default_factory=dict)  # resolved dtype, quantization, weights hash
    determinism: dict[str, Any] = Field(default_factory=dict)
    lint: list[str] = Field(default_factory=list)
    worker_pid: int | None = None
    node: Node | None = None  # None in records written before schema version 2
    started_at: float | None = None
    finished_at: float | None = None
    receipt: dict[str, Any] | None = None  # harness.store.receipts; ok records from schema 2 on
    #: the library versions this execution ran with (the receipt's libraries link); schema 4 on
    libraries: dict[str, str | None] | None = None

    @field_validator("model_meta")
    @classmethod
    def _model_meta_shape(cls, value: dict[str, Any]) -> dict[str, Any]:
        ModelMetaDoc.model_validate(value)  # checked, kept as written
        return value

    @field_validator("output")
    @classmethod
    def _output_shape(cls, value: dict[str, Any]) -> dict[str, Any]:
        OutputDoc.model_validate(value)  # checked, kept as written
        return value

    @property
    def ok(self) -> bool:
        return self.status == "ok"
