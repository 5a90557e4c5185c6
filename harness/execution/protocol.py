"""What the runner and its worker processes say to each other, typed.

Why typed: the job file and the worker's event lines used to be plain dicts, so a renamed key
failed as a ``KeyError`` in another process. The runner writes a ``WorkerJob`` (JSON file);
the worker answers one JSON line per event on a private pipe: ``ready`` (with the
environment fingerprint it runs in), ``start`` (a cell began: the runner's timeout clock
starts), ``record`` (a cell's final record), ``done``. A line that is not a valid event is
skipped by the runner (libraries never write to the pipe, but a stray line must not end a run).

A cell is a generation unless its payload carries ``work``: a replay or a locate re-run, the
other model executions the harness makes. They are jobs of the same executors (timeouts, lost
workers, stops and Ray decided once) run by the same worker; their results come back as a
record and its artifact like any cell's.

An executor passes the same events on to the shared event loop (harness.execution.loop), with
three of its own: ``refused`` (a node will not run the job), ``exit`` (the worker ended, with
its exit code) and ``lost`` (the executor lost the worker: a Ray task or node died). A fleet
executor adds what only it knows (the node, an artifact's bytes) in fields that are never
written on a worker's pipe (``exclude=True``): the events cross machines as pickled models.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Base64Bytes, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from harness.engines.draws import STARTS
from harness.store.records import Axes, Record, identity
from harness.vocabulary import CURRENT_STACK


class ReplayWork(BaseModel):
    """A replay of a candidate against the cell's task (harness.execution.replay.job), instead
    of a generation: under the cell's kernel level and thread count, in the executors' worker."""

    model_config = ConfigDict(extra="forbid")

    job: Literal["replay"] = "replay"
    candidate: Base64Bytes  # the candidate's arrays, an npz (they travel inside the job, to any node)
    response: dict[str, Any] | None = None
    start: str = "warm"
    path: str = "auto"
    rows_in_draw_factor: int = 1
    detail_steps: list[int] = Field(default_factory=list)
    recheck_band: tuple[float, float] | None = None
    allow_greedy: bool = False


class LocateWork(BaseModel):
    """The cell's task re-executed with module hooks at ``step`` (harness.execution.hooks),
    instead of a plain generation: its artifact holds every hooked module's output."""

    model_config = ConfigDict(extra="forbid")

    job: Literal["locate"] = "locate"
    step: int = 0


class ValidateWork(BaseModel):
    """The replay rule's decision for a candidate (harness.compare.replay.validate: every start
    tried, the calibrated bounds applied), as ``harness replay`` asks it."""

    model_config = ConfigDict(extra="forbid")

    job: Literal["validate"] = "validate"
    candidate: Base64Bytes  # as ReplayWork's
    response: dict[str, Any] | None = None
    thresholds: dict[str, Any] = Field(default_factory=dict)  # harness.spec.policy.Thresholds
    ran_on: str | None = None
    batch_size: int = 1
    starts: list[str] = Field(default_factory=lambda: list(STARTS))
    path: str = "auto"


#: what a cell asks of its worker besides generating its output (None: generate); each job
#: type's code is named in harness.execution.executors.WORK
Work = Annotated[ReplayWork | LocateWork | ValidateWork, Field(discriminator="job")]


class CellPayload(BaseModel):
    """One cell as a worker needs it: its identity, its resolved task and where its artifact
    goes; ``work``, when set, is the job the worker does with the task instead of generating."""

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
    work: Work | None = None

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
    stack: str = CURRENT_STACK  # the software stack it was started under (harness.execution.stacks)
    parent_pid: int | None = None


class NodeInfo(BaseModel):
    """Who a fleet node is, as its executor tells the driver (the manifest's ``nodes`` entry)."""

    key: str
    hostname: str
    ray_node_id: str | None = None
    cpus: int | None = None
    gpus: int | float | None = None  # as Ray's resource table has it (0 when absent)


class Ready(BaseModel):
    event: Literal["ready"] = "ready"
    pid: int
    environment: dict[str, Any] = Field(default_factory=dict)
    stack: str = CURRENT_STACK  # which stack's libraries the environment shows
    node: NodeInfo | None = Field(default=None, exclude=True)  # set by a fleet executor; None: this machine


class Start(BaseModel):
    event: Literal["start"] = "start"
    cell_id: str
    t: float


class RecordEvent(BaseModel):
    event: Literal["record"] = "record"
    record: Record
    artifact_bytes: bytes | None = Field(default=None, exclude=True)  # a fleet node's artifact, for the driver


class Done(BaseModel):
    event: Literal["done"] = "done"


class Refused(BaseModel):
    """A node would not start the worker (another harness build there): no cell of the job ran."""

    event: Literal["refused"] = "refused"
    reason: str
    node: NodeInfo | None = None


class Exit(BaseModel):
    """The worker process ended: its exit code (negative: the signal) and its log's tail."""

    event: Literal["exit"] = "exit"
    code: int
    log_tail: str = ""
    node: NodeInfo | None = None


class Lost(BaseModel):
    """The executor lost the worker (its Ray task or node died): ``reason`` says how and where."""

    event: Literal["lost"] = "lost"
    reason: str


WorkerEvent = Ready | Start | RecordEvent | Done  # what a worker writes on its pipe
Event = Ready | Start | RecordEvent | Done | Refused | Exit | Lost  # what the event loop consumes
_EVENT = TypeAdapter(Annotated[WorkerEvent, Field(discriminator="event")])
_ANY_EVENT = TypeAdapter(Annotated[Event, Field(discriminator="event")])


def event_line(event: WorkerEvent) -> str:
    """One event as the JSON line a worker writes."""
    return event.model_dump_json() + "\n"


def parse_event(line: str | bytes) -> WorkerEvent | None:
    """The worker event a line holds, or None when it holds none (the executor's own events
    never come from a worker's pipe)."""
    try:
        return _EVENT.validate_json(line)
    except ValidationError:
        return None


def as_event(obj: Any) -> Event | None:
    """``obj`` as an event: the model itself, or one validated from a plain dict (what a
    node running another harness build may send); None when it is neither."""
    if isinstance(obj, (Ready, Start, RecordEvent, Done, Refused, Exit, Lost)):
        return obj
    try:
        return _ANY_EVENT.validate_python(obj)
    except ValidationError:
        return None
