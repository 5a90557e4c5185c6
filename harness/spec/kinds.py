"""One registry of task kinds: what each kind is made of, named once.

Why a registry: a kind used to be spread over an if-chain of engines, kind branches in
execution, analysis, matrix and runner, and kind lists in the CLI, matrix and schemas; adding a
fifth kind touched about nine files. Now a kind is one engine file plus one ``register`` line
(below, or from a plugin module named in ``HARNESS_KINDS``). In the style of
lm-evaluation-harness's ``Registry``: entries are lazy ``"module:object"`` references, so
validating a task never imports torch, and an unknown name is one line that lists the
available ones.

A kind declares: its task model, its engine, how to build neighbour tasks for the batch-size
axis, how to key its loaded models in a worker's cache, the names of its discrete array
(codes / token ids: the "tokens" comparison level) and of its step array (where the first
divergent step is looked for), and, for multi-stage kinds, the sub-documents the cell's axes
apply to and the function that says which stage a divergence began in.

Plugins: ``HARNESS_KINDS="pkg.mod:KIND,..."`` registers extra ``KindSpec`` objects in every
process that looks a kind up (the runner and its workers alike); ``HARNESS_ENGINES=
"kind=pkg.mod:Class,..."`` replaces the engine of a registered kind (adapters, test doubles).
Both are operator settings (environment), never task or run content.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

from harness.errors import HarnessError

T = TypeVar("T")


class UnknownName(HarnessError, ValueError):
    """A name no registry entry has; the message lists the available names."""


def load_object(ref: str) -> Any:
    """The object a ``"module:attr"`` reference names (imported on demand)."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise UnknownName(f"{ref!r} is not a 'module:object' reference")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Names to objects; an object may be registered lazily as a ``"module:object"`` string,
    resolved (once) on first ``get``."""

    def __init__(self, what: str):
        self.what = what
        self._entries: dict[str, T | str] = {}

    def register(self, name: str, obj: T | str, *, replace: bool = False) -> None:
        if name in self._entries and not replace:
            raise ValueError(f"{self.what} {name!r} is already registered")
        self._entries[name] = obj

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise UnknownName(f"unknown {self.what} {name!r}; available: {', '.join(self._entries) or 'none'}")
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = load_object(entry)
            self._entries[name] = entry
        return entry

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._entries))


class KindSpec(BaseModel):
    """Everything the harness needs to know about one task kind (references are lazy)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    task_model: str  # "module:Class", a pydantic model of the task document
    engine: str  # "module:Class" with load(task, device) and run(loaded, task, device, neighbours)
    # "module:function" (task, batch_size) -> list of tasks; None: batch_size > 1 is refused
    neighbours: str | None = None
    model_key: str = "harness.engines.base:model_key"  # "module:function" (task, device) -> tuple
    discrete: str | None = None  # array compared exactly at the "tokens" level (codes, token_ids)
    steps: tuple[str, ...] = ()  # arrays searched for the first divergent step (the first one present)
    upstream_discrete: str | None = None  # an earlier stage's discrete array that "tokens" must also cover
    stages: tuple[str, ...] = ()  # sub-documents that carry the cell's dtype/quantization/seed
    attribute_stage: str | None = None  # "module:function" (digests_a, digests_b) -> stage name
    schema_file: str | None = None  # its JSON Schema's file name in harness/schemas/ (shipped kinds)

    def load(self, field: str) -> Any:
        ref = getattr(self, field)
        return None if ref is None else load_object(ref)

    def task_class(self) -> type[BaseModel]:
        cls: type[BaseModel] = load_object(self.task_model)
        return cls


class KindRegistry(Registry[KindSpec]):
    """The task kinds, with the ``HARNESS_KINDS`` plugins and ``HARNESS_ENGINES`` overrides
    read from the environment on first use."""

    def __init__(self) -> None:
        super().__init__("task kind")
        self._env_seen: tuple[str, str] | None = None
        self._engine_overrides: dict[str, str] = {}
        self._before_env: dict[str, KindSpec | str | None] = {}  # what HARNESS_KINDS replaced (None: added)

    def add(self, spec: KindSpec, *, replace: bool = False) -> None:
        self.register(spec.name, spec, replace=replace)

    def _sync_env(self) -> None:
        env = (os.environ.get("HARNESS_KINDS", ""), os.environ.get("HARNESS_ENGINES", ""))
        if env == self._env_seen:
            return
        self._env_seen = env
        for name, before in self._before_env.items():  # the previous value's kinds go first
            if before is None:
                self.unregister(name)
            else:
                self.register(name, before, replace=True)
        self._before_env = {}
        for ref in filter(None, (s.strip() for s in env[0].split(","))):
            spec = load_object(ref)
            if not isinstance(spec, KindSpec):
                raise UnknownName(f"HARNESS_KINDS: {ref} is not a KindSpec")
            self._before_env.setdefault(spec.name, self._entries.get(spec.name))
            self.register(spec.name, spec, replace=True)
        self._engine_overrides = {}
        for item in filter(None, (s.strip() for s in env[1].split(","))):
            kind, _, target = item.partition("=")
            self._engine_overrides[kind.strip()] = target.strip()

    def get(self, name: str) -> KindSpec:
        self._sync_env()
        return super().get(name)

    def names(self) -> list[str]:
        self._sync_env()
        return super().names()

    def __contains__(self, name: object) -> bool:
        self._sync_env()
        return super().__contains__(name)

    def engine(self, name: str) -> Any:
        """A fresh engine for ``name`` (the ``HARNESS_ENGINES`` override when one is set)."""
        spec = self.get(name)
        return load_object(self._engine_overrides.get(name, spec.engine))()

    def of_task(self, task: Any) -> str:
        """The kind whose task model ``task`` is an instance of."""
        for name in self.names():
            if type(task) is self.get(name).task_class():
                return name
        raise UnknownName(f"unknown task kind for {type(task).__name__}; available: {', '.join(self.names())}")


KINDS = KindRegistry()

# --- the built-in kinds: one line each ------------------------------------------------------
KINDS.add(KindSpec(name="audio", task_model="harness.spec.tasks:AudioTask", engine="harness.engines.musicgen:MusicgenEngine",
                   neighbours="harness.engines.musicgen:neighbours", discrete="codes", steps=("codes",),
                   schema_file="text-to-audio-task.schema.json"))
KINDS.add(KindSpec(name="gpt", task_model="harness.spec.tasks:GPTTask", engine="harness.engines.textgen:TextgenEngine",
                   neighbours="harness.engines.textgen:neighbours", discrete="token_ids", steps=("token_ids",),
                   schema_file="gpt-inference-task.schema.json"))
KINDS.add(KindSpec(name="audioldm", task_model="harness.spec.tasks:AudioLDMTask",
                   engine="harness.engines.audioldm:AudioLDMEngine", neighbours="harness.engines.audioldm:neighbours",
                   steps=("latents",), schema_file="audioldm-task.schema.json"))
KINDS.add(KindSpec(name="chain", task_model="harness.spec.tasks:ChainTask", engine="harness.engines.chain:ChainEngine",
                   neighbours="harness.engines.chain:neighbours", model_key="harness.engines.chain:model_key",
                   discrete="codes", steps=("codes", "latents"), upstream_discrete="text_token_ids",
                   stages=("text_stage", "audio_stage"), attribute_stage="harness.compare.chain:attribute_stage",
                   schema_file="chain-task.schema.json"))
