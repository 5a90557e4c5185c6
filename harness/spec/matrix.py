"""Task matrices: TOML files that expand into cells with stable, readable ids.

A matrix names tasks (files or inline) and axes (dtype, quantize_bits, seed, device, threads,
batch_size, profile, load), how many repeats each worker makes and how many independent worker
processes repeat the cells, include/exclude rules, comparison thresholds and gates, and which
engine runs the cells (``engine = "node-runner"``: the network's own runner package).
``load`` is the order of seeding and model loading: ``cold`` seeds and then loads a fresh copy
(a node's first task), ``warm`` takes the worker's loaded model and then seeds (a node
serving from its cache); the network's audio runner gives other audio for the two.
Expansion is pure: it knows nothing of execution. Cells a machine cannot run are kept and
marked with a skip reason (never a crash), so the report says what was not tested and why.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from harness.errors import HarnessError
from harness.isa import ISA_CHOICES, NATIVE
from harness.isa import unavailable as isa_unavailable
from harness.spec.cell import Cell
from harness.spec.kinds import KINDS, TASK_SETTINGS
from harness.spec.policy import Gates, NamedValidator, Thresholds
from harness.spec.rules import RuleIndex
from harness.spec.stacks import StackSpec, stack_name_problem
from harness.spec.tasks import (
    TaskError,
    format_validation_error,
    load_task_file,
    parse_task,
    task_kind,
    task_to_doc,
)
from harness.store.files import read_input_file
from harness.vocabulary import AXIS_NAMES, CURRENT_STACK

MATRIX_SCHEMA_VERSION = 1
MAX_CELLS = 20_000  # beyond this expansion is refused unless --max-cells raises it
MAX_MATRIX_FILE_BYTES = 4 * 1024 * 1024
MAX_THREADS = 1024
MAX_RULES = 2_000  # include / exclude rules per matrix


class MatrixError(HarnessError, ValueError):
    """A matrix that cannot be expanded; the message names the file and the field."""


def _none_bits(v: Any) -> Any:
    return None if v in (0, "none", "None", "null") else v


def device_problem(device: str, allow_all: bool = True) -> str | None:
    """Why ``device`` names no device the harness runs on (None when it does)."""
    if device in ("cpu", "cuda") or (allow_all and device == "all") or re.fullmatch(r"cuda:\d{1,4}", device):
        return None
    forms = "cpu, cuda, cuda:N or all" if allow_all else "cpu, cuda or cuda:N"
    return f"device {device!r} must be {forms}"


class AxesSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    dtype: list[Literal["float16", "bfloat16", "float32", "auto"]] | None = None
    quantize_bits: list[Literal[4, 8] | None] | None = None  # 0 or "none" in TOML means no quantization
    # strict: seed = [true] is a mistake, not seed 1; every axis needs at least one value
    seed: list[Annotated[int, Strict()]] | None = Field(None, min_length=1)
    device: list[str] = Field(default_factory=lambda: ["cpu"], min_length=1)
    threads: list[Annotated[int, Strict()] | None] = Field(
        default_factory=lambda: list[int | None]([None]), min_length=1
    )
    batch_size: list[Annotated[int, Strict()]] = Field(default_factory=lambda: [1], min_length=1)
    profile: list[Literal["on", "off"]] = Field(
        default_factory=lambda: list[Literal["on", "off"]](["on"]), min_length=1
    )
    load: list[Literal["cold", "warm"]] = Field(
        default_factory=lambda: list[Literal["cold", "warm"]](["warm"]), min_length=1
    )
    # the CPU kernel set (harness.isa): native is the machine as it is; the others cap ATen,
    # oneDNN and oneMKL in a fresh worker, emulating another CPU kind on this one (below-native:
    # the next narrower ATen kernels on the machine that runs the cell)
    # (the levels are named once, in harness.isa; pydantic reads a Literal of the tuple, mypy cannot)
    isa: list[Literal[ISA_CHOICES]] = Field(default_factory=lambda: [NATIVE], min_length=1)  # type: ignore[valid-type]
    # TF32 matmul on CUDA (on: allowed even under the determinism profile); no meaning on a CPU
    tf32: list[Literal["off", "on"]] = Field(default_factory=lambda: list[Literal["off", "on"]](["off"]), min_length=1)
    # the software stacks (harness.spec.stacks); unset: current and every stack the matrix names
    stack: list[str] | None = Field(None, min_length=1)

    @field_validator("quantize_bits", mode="before")
    @classmethod
    def _bits(cls, v: Any) -> Any:
        return [_none_bits(x) for x in v] if isinstance(v, list) else v

    @field_validator("threads", mode="before")
    @classmethod
    def _threads(cls, v: Any) -> Any:
        return [None if x in (0, "auto") else x for x in v] if isinstance(v, list) else v

    @field_validator("threads")
    @classmethod
    def _threads_bounded(cls, v: list[int | None]) -> list[int | None]:
        if any(t is not None and not 1 <= t <= MAX_THREADS for t in v):
            raise ValueError(f"threads values must be 1..{MAX_THREADS} (or 0/'auto' for the default)")
        return v

    @field_validator("device")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        for d in v:
            problem = device_problem(d)
            if problem:
                raise ValueError(problem)
        return v

    @field_validator("batch_size")
    @classmethod
    def _bs(cls, v: list[int]) -> list[int]:
        if any(b < 1 or b > 64 for b in v):
            raise ValueError("batch_size values must be 1..64")
        return v

    @field_validator("seed")
    @classmethod
    def _seed(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(s < 0 or s > 2**32 - 1 for s in v):
            raise ValueError("seeds must be 0 <= seed < 2**32")
        return v


class TaskEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    file: str | None = None
    task: dict[str, Any] | None = None
    kind: str | None = None  # a registered kind (harness.spec.kinds); inferred from the fields when None
    axes: dict[str, Any] = Field(default_factory=dict)  # per-task axis overrides

    @field_validator("kind")
    @classmethod
    def _registered(cls, v: str | None) -> str | None:
        if v is not None and v not in KINDS:
            raise ValueError(f"unknown task kind {v!r}; available: {', '.join(KINDS.names())}")
        return v


class MatrixSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    schema_version: int = Field(default=MATRIX_SCHEMA_VERSION, strict=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    repeats: int = Field(default=2, ge=1, le=100)
    workers: int = Field(default=2, ge=1, le=16)
    # CPU workers running at once (CUDA devices always get one worker each); 1 by default
    # because workers sharing cores perturb each other's timings. Outputs are unaffected.
    parallel: int = Field(default=1, ge=1, le=64, strict=True)
    timeout_s: float = Field(default=300.0, gt=0, le=86_400)
    # which code runs the cells: this harness's engines, or the network's runner package itself
    engine: Literal["harness", "node-runner"] = "harness"
    tasks: list[TaskEntry] = Field(min_length=1)
    axes: AxesSpec = Field(default_factory=AxesSpec)
    # bounded: each include adds a cell before expansion; excludes are indexed (spec/rules.py)
    include: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_RULES)
    exclude: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_RULES)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    # per task kind, the validator a non-bitwise configuration may pass through (with its
    # measured error rates on this model); none named: only bitwise passes
    validators: dict[str, NamedValidator] = Field(default_factory=dict)
    gates: Gates = Field(default_factory=Gates)
    # other Python environments the cells also run under, compared with the current one
    stacks: dict[str, StackSpec] = Field(default_factory=dict)

    @field_validator("stacks")
    @classmethod
    def _stack_names(cls, v: dict[str, StackSpec]) -> dict[str, StackSpec]:
        for name in v:
            problem = stack_name_problem(name)
            if problem:
                raise ValueError(problem)
        return v

    @field_validator("validators")
    @classmethod
    def _validator_kinds(cls, v: dict[str, NamedValidator]) -> dict[str, NamedValidator]:
        """Keyed by any registered kind; its rule one the kind's ``validator_rules`` allow."""
        for kind, named in v.items():
            if kind not in KINDS:
                raise ValueError(f"{kind!r} is no task kind; available: {', '.join(KINDS.names())}")
            allowed = KINDS.get(kind).validator_rules
            if named.rule not in allowed:
                raise ValueError(f"{kind}: rule {named.rule!r} cannot judge {kind} tasks; one of {', '.join(allowed)}")
        return v


@dataclass
class Matrix:
    spec: MatrixSpec
    source: Path | None
    tasks: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # name -> (kind, doc)

    def to_doc(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(mode="json"),
            "source": str(self.source) if self.source else None,
            "tasks": {k: {"kind": kind, "task": doc} for k, (kind, doc) in self.tasks.items()},
        }


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def dump_matrix(doc: dict[str, Any]) -> str:
    """A matrix document as TOML (tomllib only reads). TOML has no null: None means unset."""
    import tomli_w

    return tomli_w.dumps(_drop_none(doc))


def load_matrix(path: str | Path, trusted_keys: str | Path | None = None) -> Matrix:
    """The matrix at ``path``; a calibration it names is checked against ``trusted_keys`` (a
    trusted-keys file; None: ``$HARNESS_TRUSTED_KEYS``, or no check when that is unset)."""
    path = Path(path)
    raw = read_input_file(path, MAX_MATRIX_FILE_BYTES, MatrixError)
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise MatrixError(f"{path}: not valid TOML ({err})") from None
    except RecursionError:
        raise MatrixError(f"{path}: not valid TOML (nested too deeply)") from None
    return matrix_from_doc(data, path, trusted_keys)


def matrix_from_doc(data: dict[str, Any], source: Path | None = None, trusted_keys: str | Path | None = None) -> Matrix:
    where = str(source) if source else "<matrix>"
    version = data.get("schema_version", MATRIX_SCHEMA_VERSION)
    if not isinstance(version, int) or isinstance(version, bool):
        raise MatrixError(f"{where}: $.schema_version: must be an integer, got {type(version).__name__}")
    if version < 1:
        raise MatrixError(f"{where}: $.schema_version: must be 1 or more, got {version}")
    if version > MATRIX_SCHEMA_VERSION:
        raise MatrixError(
            f"{where}: schema_version {version} is newer than this harness supports ({MATRIX_SCHEMA_VERSION})"
        )
    base = source.parent if source else Path.cwd()
    data = _with_calibrations(data, base, where, trusted_keys)
    try:
        spec = MatrixSpec.model_validate(data)
    except ValidationError as err:
        raise MatrixError("\n".join(f"{where}: {line}" for line in format_validation_error(err).splitlines())) from None
    matrix = Matrix(spec=spec, source=source)
    for i, entry in enumerate(spec.tasks):
        if entry.name in matrix.tasks:
            raise MatrixError(f"{where}: $.tasks[{i}].name: duplicate task name {entry.name!r}")
        if (entry.file is None) == (entry.task is None):
            raise MatrixError(f"{where}: $.tasks[{i}]: give exactly one of file or task")
        try:
            task = load_task_file(base / entry.file, entry.kind) if entry.file else parse_task(entry.task, entry.kind)
        except TaskError as err:
            raise MatrixError(
                "\n".join(f"{where}: $.tasks[{i}] ({entry.name}): {line}" for line in str(err).splitlines())
            ) from None
        unknown = set(entry.axes) - set(AXIS_NAMES)
        if unknown:
            raise MatrixError(f"{where}: $.tasks[{i}].axes: unknown axis {sorted(unknown)[0]!r}")
        matrix.tasks[entry.name] = (task_kind(task), task_to_doc(task))
        why = node_runner_refusal(*matrix.tasks[entry.name]) if spec.engine == "node-runner" else None
        if why:
            raise MatrixError(f"{where}: $.tasks[{i}] ({entry.name}): engine 'node-runner' {why}")
    _check_stack_values(spec, where)
    for section in ("include", "exclude"):
        for j, rule in enumerate(getattr(spec, section)):
            unknown = set(rule) - set(AXIS_NAMES) - {"task"}
            if unknown:
                raise MatrixError(f"{where}: $.{section}[{j}]: unknown key {sorted(unknown)[0]!r}")
            listed = next((k for k, v in rule.items() if isinstance(v, list)), None)
            if section == "include" and listed:
                raise MatrixError(
                    f"{where}: $.include[{j}].{listed}: an include rule adds one cell, so it takes one "
                    f"value per axis, not a list (give one include per value)"
                )
            values = {k: (v if isinstance(v, list) else [v]) for k, v in rule.items() if k != "task"}
            try:
                AxesSpec.model_validate(values)
            except ValidationError as err:
                raise MatrixError(
                    "\n".join(
                        f"{where}: $.{section}[{j}]{line[1:]}" for line in format_validation_error(err).splitlines()
                    )
                ) from None
    return matrix


def _check_stack_values(spec: MatrixSpec, where: str) -> None:
    """Every stack an axis or rule names is ``current`` or one the matrix's ``[stacks]`` names."""
    known = [CURRENT_STACK, *spec.stacks]
    named = [("$.axes.stack", spec.axes.stack or [])]
    named += [(f"$.tasks[{i}].axes.stack", _listed(e.axes.get("stack"))) for i, e in enumerate(spec.tasks)]
    for section in ("include", "exclude"):
        named += [(f"$.{section}[{j}].stack", _listed(r.get("stack"))) for j, r in enumerate(getattr(spec, section))]
    for path, values in named:
        unknown = next((v for v in values if v not in known), None)
        if unknown is not None:
            raise MatrixError(f"{where}: {path}: unknown stack {unknown!r}; the matrix names {', '.join(known)}")


def _listed(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _with_calibrations(
    data: dict[str, Any], base: Path, where: str, trusted_keys: str | Path | None = None
) -> dict[str, Any]:
    """The matrix with each ``[validators.KIND] calibration = "FILE"`` replaced by the file's
    checked content (relative to the matrix), so the run's manifest carries what it judged by.
    A calibration is policy: under trusted keys it must be signed by one of them, and
    ``require_signed = true`` refuses to run without trusted keys (docs/trust.md)."""
    from harness.spec.calibration import CalibrationError, load_calibration
    from harness.store.signing import SignatureError, load_trusted_keys

    validators = data.get("validators")
    if not isinstance(validators, dict):
        return data
    out = dict(validators)
    for kind, doc in validators.items():
        if not isinstance(doc, dict):
            continue
        typed = next((k for k in ("sources", "notes", "signed_by") if doc.get(k)), None)  # a manifest's dump: None / []
        if typed:  # set from a calibration file's entry, never typed: bounds would claim a measurement
            raise MatrixError(
                f"{where}: $.validators.{kind}.{typed}: comes from the calibration file; name the file "
                f'with calibration = "FILE"'
            )
        if not isinstance(doc.get("calibration"), str):
            continue
        name = doc["calibration"]
        try:
            cal = load_calibration(base / name)
            trusted = load_trusted_keys(trusted_keys)
            if doc.get("require_signed") is True and trusted is None:
                raise CalibrationError(
                    f"{base / name}: require_signed, but no trusted keys were given (--trusted-keys FILE "
                    f"or $HARNESS_TRUSTED_KEYS)"
                )
            cal.signer(trusted, str(base / name))
        except (CalibrationError, SignatureError) as err:
            raise MatrixError(f"{where}: $.validators.{kind}.calibration: {err}") from None
        out[kind] = {**doc, "calibration": cal.model_dump(mode="json"), "calibration_file": name}
    return {**data, "validators": out}


def node_runner_refusal(kind: str, doc: dict[str, Any]) -> str | None:
    """Why the network's own runner cannot run this task (None when it can): a kind's
    ``KindSpec.node_runner`` says whether a runner runs it and which of its fields are this
    harness's extensions the runner does not have."""
    support = KINDS.get(kind).node_runner
    if support is None:
        runnable = [k for k in KINDS.names() if KINDS.get(k).node_runner is not None]
        return f"runs {' and '.join(runnable)} tasks only (the network's runners); this is a {kind} task"
    for name in support.extensions:
        if doc.get(name):
            return f"cannot run {name}: it is a harness extension the network's {kind} runner does not have"
    return None


def _matches(rule: dict[str, Any], task_name: str, values: dict[str, Any]) -> bool:
    for key, want in rule.items():
        have = task_name if key == "task" else values.get(key)
        options = want if isinstance(want, list) else [want]
        if key == "quantize_bits":
            options = [_none_bits(o) for o in options]
        if have not in options:
            return False
    return True


def _devices(requested: list[str], available: list[str]) -> list[str]:
    out: list[str] = []
    for d in requested:
        expanded = available if d == "all" else (["cuda:0"] if d == "cuda" else [d])
        out.extend(x for x in expanded if x not in out)
    return out


def expand(matrix: Matrix, available_devices: list[str] | None = None, max_cells: int = MAX_CELLS) -> list[Cell]:
    """Every cell of the matrix, in a stable order, with skip reasons for impossible ones."""
    available = available_devices if available_devices is not None else ["cpu"]
    spec = matrix.spec
    combos: list[tuple[str, dict[str, Any]]] = []
    for name, (kind, doc) in matrix.tasks.items():
        axes = spec.axes.model_dump()
        entry = next((e for e in spec.tasks if e.name == name), None)
        if entry is None:  # a resolved task the spec does not list (an edited manifest)
            raise MatrixError(f"matrix {spec.name!r}: task {name!r} is not among $.tasks")
        try:
            axes.update(AxesSpec.model_validate({**spec.axes.model_dump(), **entry.axes}).model_dump())
        except ValidationError as err:
            raise MatrixError(f"$.tasks ({name}).axes: {format_validation_error(err)}") from None
        own = KINDS.get(kind).task_settings(doc)  # a task's own dtype, quantization and seed, when no axis sets them
        for setting in TASK_SETTINGS:
            axes[setting] = axes[setting] or [own[setting]]
        axes["device"] = _devices(axes["device"], available) or axes["device"]
        axes["stack"] = axes["stack"] or [CURRENT_STACK, *spec.stacks]
        total = 1
        for n in AXIS_NAMES:
            total *= len(axes[n])
        includes = sum(1 for rule in spec.include if rule.get("task", name) == name)
        if (total + includes) * spec.repeats * spec.workers + len(combos) * spec.repeats * spec.workers > max_cells:
            raise MatrixError(
                f"matrix {spec.name!r} expands to more than {max_cells} cells; narrow the axes or pass --max-cells"
            )
        for combo in itertools.product(*(axes[n] for n in AXIS_NAMES)):
            combos.append((name, dict(zip(AXIS_NAMES, combo, strict=False))))
        for rule in spec.include:
            if rule.get("task", name) == name:
                extra = {n: (rule.get(n, axes[n][0])) for n in AXIS_NAMES}
                extra["quantize_bits"] = _none_bits(extra["quantize_bits"])
                combos.append((name, extra))
    cells: list[Cell] = []
    seen: set[str] = set()
    excluded = RuleIndex(spec.exclude, {"quantize_bits": _none_bits})
    for name, values in combos:
        if excluded.matches({**values, "task": name}):
            continue
        kind, doc = matrix.tasks[name]
        if spec.engine == "node-runner" and values["batch_size"] != 1:
            raise MatrixError(
                f"matrix {spec.name!r}: engine 'node-runner' runs one task per call (as a node does); "
                f"task {name!r} asks batch_size {values['batch_size']}"
            )
        task_doc = apply_axes(kind, doc, values)
        reason = feasibility(kind, values, available)
        others = {k: v for k, v in values.items() if k not in TASK_SETTINGS}
        for worker in range(spec.workers):
            for repeat in range(spec.repeats):
                cell = Cell(name, kind, task_doc, {**others, "repeat": repeat, "worker": worker}, reason, spec.engine)
                if cell.cell_id not in seen:
                    seen.add(cell.cell_id)
                    cells.append(cell)
    if len(cells) > max_cells:
        raise MatrixError(f"matrix {spec.name!r} expands to {len(cells)} cells (limit {max_cells}); pass --max-cells")
    return cells


def apply_axes(kind: str, doc: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The task document a cell with these axis values runs: its dtype, quantization and seed
    set where its kind keeps them (every stage of a chain). Also a record's task, rebuilt from
    its manifest's resolved task and its axes."""
    return KINDS.get(kind).with_task_settings(doc, values)


def feasibility(kind: str, values: dict[str, Any], available: list[str]) -> str | None:
    """Why this machine cannot run the cell (None when it can)."""
    device = values["device"]
    if device != "cpu" and device not in available:
        return f"{device} is not available on this machine"
    isa = values.get("isa", NATIVE)
    if isa != NATIVE and device != "cpu":
        return f"isa {isa} caps CPU kernels; a {device} cell runs on the GPU (use isa = native there)"
    why = isa_unavailable(isa)
    if why:
        return why
    if values.get("tf32") == "on" and not device.startswith("cuda"):
        return f"tf32 on is a CUDA matmul mode; {device} has none"
    if values["quantize_bits"] and device.startswith("mps"):
        return f"{values['quantize_bits']}-bit bitsandbytes quantization does not run on {device}"
    if values["quantize_bits"]:
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None:
            return "bitsandbytes is not installed"
    return None


def available_devices() -> list[str]:
    """cpu plus every CUDA device torch can see."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return devices
