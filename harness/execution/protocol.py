"""What the runner and its worker processes say to each other, typed.

Why typed: the job file and the worker's event lines used to be plain dicts, so a renamed key
failed as a ``KeyError`` in another process. The runner writes a ``WorkerJob`` (JSON file);
the worker answers one JSON line per event on a private pipe: ``ready`` (with the
environment fingerprint it runs in), ``start`` (a cell began: the runner's timeout clock
starts), ``record`` (a cell's final record), ``done``. A line that is not a valid event is
skipped by the runner (libraries never write to the pipe, but a stray line must not end a run).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from harness.store.records import Axes, Record, identity


class CellPayload(BaseModel):
    """One cell as a worker needs it: its identity, its resolved task and where its artifact goes."""

    model_config = ConfigDict(extra="forbid")

    cell_id: str
    spec_hash: str
    config_id: str
    task_name: str
    kind: str
    model: str
    axes: Axes
    task_doc: dict[str, Any]
    lint: list[str] = Field(default_factory=list)
    artifact_name: str
    engine: str = "harness"  # which code runs it: this harness's engines or "node-runner"

    def identity(self) -> dict[str, Any]:
        """The fields every record of this cell carries (harness.store.records.IDENTITY_FIELDS)."""
        return identity(self.model_dump())


class WorkerJob(BaseModel):
    """The job file a worker process is started with."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str
    profile: str
    cells: list[CellPayload]
    isa: str = "native"  # the CPU kernel set, set before torch starts (harness.isa)
    tf32: str = "off"
    parent_pid: int | None = None


class Ready(BaseModel):
    event: Literal["ready"] = "ready"
    pid: int
    environment: dict[str, Any] = Field(default_factory=dict)


class Start(BaseModel):
    event: Literal["start"] = "start"
    cell_id: str
    t: float


class RecordEvent(BaseModel):
    event: Literal["record"] = "record"
    record: Record


class Done(BaseModel):
    event: Literal["done"] = "done"


WorkerEvent = Annotated[Ready | Start | RecordEvent | Done, Field(discriminator="event")]
_EVENT = TypeAdapter(WorkerEvent)


def event_line(event: Ready | Start | RecordEvent | Done) -> str:
    """One event as the JSON line a worker writes."""
    return event.model_dump_json() + "\n"


def parse_event(line: str | bytes) -> Ready | Start | RecordEvent | Done | None:
    """The event a line holds, or None when it holds none."""
    try:
        return _EVENT.validate_json(line)
    except ValidationError:
        return None
