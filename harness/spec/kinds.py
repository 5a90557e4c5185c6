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
divergent step is looked for), for multi-stage kinds the sub-documents that carry the task's
seed, dtype and quantization and the function that says which stage a divergence began in,
the top-level fields a document of it is recognised by (the network sends no kind), the
validator rules a matrix may name for it, the rule a validation group applies to it,
whether the network's own runner package runs it (engine ``node-runner``), and its replayer
(how its discrete output is teacher-forced against the task: harness.execution.replay; none
for a kind without tokens).

Its engine is checked against the ``Engine`` protocol (below) when it is resolved: a missing
method or ``run()`` parameter (``seeded``) is one line naming it, not a TypeError mid-run.

Plugins, in every process that looks a kind up (the runner and its workers alike):
``HARNESS_KINDS="pkg.mod:KIND,..."`` registers (or replaces) ``KindSpec`` objects; an
installed distribution adds kinds through the ``consensus_harness.kinds`` entry-point group
(as pytest finds ``pytest11`` plugins), each entry naming a ``KindSpec``::

    [project.entry-points."consensus_harness.kinds"]
    toy = "toy_kind:TOY"

``HARNESS_ENGINES="kind=pkg.mod:Class,..."`` replaces the engine of a registered kind
(adapters, test doubles). All are operator settings (installation, environment), never task
or run content.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
from collections.abc import Iterator, Sequence
from typing import Any, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from harness.errors import HarnessError
from harness.outputs import Output
from harness.vocabulary import NAMED_RULES, RULE_NAMES

T = TypeVar("T")
ENTRY_POINT_GROUP = "consensus_harness.kinds"
#: what a task document says besides its content: the cell's dtype, quantization and seed axes
#: (with the value a document without them means)
TASK_SETTINGS: dict[str, Any] = {"dtype": "auto", "quantize_bits": None, "seed": 0}
#: the rules a matrix may name as a kind's validator (harness.spec.policy.NamedValidator)
VALIDATOR_RULES = NAMED_RULES


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


class EngineMismatch(HarnessError, TypeError):
    """A kind's engine that lacks a method or parameter of the ``Engine`` protocol."""


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


class Engine(Protocol):
    """What every kind's engine offers (``harness.engines.base`` explains the two calls). The
    loaded model is a ``harness.engines.base.LoadedModel``: typed ``Any`` here, as the spec stage
    sits below the engines."""

    kind: str

    def load(self, task: Any, device: str) -> Any: ...

    def run(
        self, loaded: Any, task: Any, device: str, neighbours: Sequence[Any] = (), seeded: bool = False
    ) -> Output: ...


def engine_problem(engine: Any) -> str | None:
    """What ``engine`` (an instance or a class) lacks of the ``Engine`` protocol (None when
    nothing): a method, or a parameter callers pass (a ``run`` without ``seeded`` breaks every
    cold cell). Callers pass the leading parameters by position, the defaulted ones by name."""
    for method in ("load", "run"):
        fn = getattr(engine, method, None)
        if not callable(fn):
            return f"has no {method}() method"
        try:
            have = inspect.signature(fn).parameters
        except (TypeError, ValueError):
            continue  # no signature to read (a builtin): nothing to check
        want = [p for n, p in inspect.signature(getattr(Engine, method)).parameters.items() if n != "self"]
        kinds = {p.kind for p in have.values()}
        positional = [
            p for n, p in have.items() if n != "self" and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        needed = [p.name for p in want if p.default is p.empty]
        if inspect.Parameter.VAR_POSITIONAL not in kinds and len(positional) < len(needed):
            return f"{method}() takes {len(positional)} of the positional parameters ({', '.join(needed)})"
        if inspect.Parameter.VAR_KEYWORD in kinds:
            continue
        missing = [p.name for p in want if p.default is not p.empty and p.name not in have]
        if missing:
            return f"{method}() lacks the parameter{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
    return None


class KindReplayer(Protocol):
    """How a kind's output is replayed against its task (harness.execution.replay): which
    stages it checks, why a task cannot be, and the replay itself. Typed ``Any`` where the
    objects belong to later stages (the candidate, the model cache, the trace)."""

    stages: tuple[tuple[str, str], ...]  # (stage, the candidate's array it checks), in order

    def support(self, task: Any, device: str) -> str | None: ...

    def replay(self, kind: str, task: Any, candidate: Any, device: str, cache: Any, opts: Any) -> Any: ...


class ReplayerMismatch(HarnessError, TypeError):
    """A kind's replayer reference that names nothing, or an object that is not a replayer."""


class NodeRunner(BaseModel):
    """How the network's own runner package runs a kind (engine ``node-runner``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    package: str  # the importable runner package; its ``inference.run_task`` is called
    upstream: str  # where the package comes from (named when it is not importable)
    interface: Literal["audio", "gpt"]  # which of the network's run_task signatures it has
    extensions: tuple[str, ...] = ()  # task fields that are harness extensions the runner lacks


class KindSpec(BaseModel):
    """Everything the harness needs to know about one task kind (references are lazy)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    task_model: str  # "module:Class", a pydantic model of the task document
    engine: str  # "module:Class" following the Engine protocol (above)
    # "module:function" (task, batch_size) -> list of tasks; None: batch_size > 1 is refused
    neighbours: str | None = None
    model_key: str = "harness.engines.base:model_key"  # "module:function" (task, device) -> tuple
    discrete: str | None = None  # array compared exactly at the "tokens" level (codes, token_ids)
    steps: tuple[str, ...] = ()  # arrays searched for the first divergent step (the first one present)
    upstream_discrete: str | None = None  # an earlier stage's discrete array that "tokens" must also cover
    # sub-documents that carry the task's dtype/quantization/seed (a cell's axes set each; the
    # first one's are the task's); none: the document itself carries them
    stages: tuple[str, ...] = ()
    attribute_stage: str | None = None  # "module:function" (digests_a, digests_b) -> stage name
    schema_file: str | None = None  # its JSON Schema's file name in harness/schemas/ (shipped kinds)
    # kind inference: a document carrying any of these top-level fields is of this kind; the
    # fallback kind is the one a document with no kind's fields is taken for
    recognised_by: tuple[str, ...] = ()
    fallback: bool = False
    validator_rules: tuple[str, ...] = VALIDATOR_RULES  # the rules a matrix may name as its validator
    # (rule, label): what a 3-node validation group applies to this kind's results
    network_rule: tuple[str, str] = ("result_hash", "proposed: sha256 of the result")
    node_runner: NodeRunner | None = None  # None: the network's runners do not run it
    # rule -> "module:function" making the cheats `harness calibrate` measures that rule against,
    # from a study's own outputs (harness.compare.cheats); a rule not here cannot be calibrated
    # for this kind (its command says so, and why)
    cheats: dict[str, str] = Field(default_factory=dict)
    # "module:object" following the KindReplayer protocol (above): how its discrete output is
    # teacher-forced, which stages; None: it has no token to check (not replayed)
    replayer: str | None = None

    @field_validator("validator_rules")
    @classmethod
    def _known_validator_rules(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [r for r in v if r not in VALIDATOR_RULES]
        if unknown:
            raise ValueError(f"unknown validator rule {unknown[0]!r}; one of {', '.join(VALIDATOR_RULES)}")
        return v

    @field_validator("network_rule")
    @classmethod
    def _known_network_rule(cls, v: tuple[str, str]) -> tuple[str, str]:
        if v[0] not in RULE_NAMES:
            raise ValueError(f"unknown rule {v[0]!r}; one of {', '.join(RULE_NAMES)}")
        return v

    def load(self, field: str) -> Any:
        ref = getattr(self, field)
        return None if ref is None else load_object(ref)

    def task_class(self) -> type[BaseModel]:
        cls: type[BaseModel] = load_object(self.task_model)
        return cls

    def task_settings(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The dtype, quantize_bits and seed a task document says (a staged kind's: its first
        stage's, since a cell sets every stage alike); absent ones are their defaults."""
        where = doc.get(self.stages[0], {}) if self.stages else doc
        where = where if isinstance(where, dict) else {}
        return {name: where.get(name, default) for name, default in TASK_SETTINGS.items()}

    def model_of(self, doc: dict[str, Any]) -> str:
        """The model a record names for a task document: its model; a staged kind's (a
        chain's), its stages' models in stage order."""
        model: str = doc.get("model") or " -> ".join(doc[stage]["model"] for stage in self.stages)
        return model

    def with_task_settings(self, doc: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
        """``doc`` with its dtype, quantize_bits and seed set from ``values`` (in every stage)."""
        patch = {name: values[name] for name in TASK_SETTINGS}
        if self.stages:
            return {**doc, **{stage: {**doc[stage], **patch} for stage in self.stages}}
        return {**doc, **patch}


class KindRegistry(Registry[KindSpec]):
    """The task kinds, with the ``consensus_harness.kinds`` entry points, the ``HARNESS_KINDS``
    plugins and the ``HARNESS_ENGINES`` overrides read on first use."""

    def __init__(self) -> None:
        super().__init__("task kind")
        self._env_seen: tuple[str, str] | None = None
        self._engine_overrides: dict[str, str] = {}
        self._before_env: dict[str, KindSpec | str | None] = {}  # what HARNESS_KINDS replaced (None: added)
        self._entry_points_read = False
        self._engines_checked: set[str] = set()

    def add(self, spec: KindSpec, *, replace: bool = False) -> None:
        self.register(spec.name, spec, replace=replace)

    def _read_entry_points(self) -> None:
        """Kinds installed distributions declare; they add kinds, never replace one."""
        self._entry_points_read = True
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(getattr(ep, "dist", None), "name", None)
            where = f"{ENTRY_POINT_GROUP} entry point {ep.name} = {ep.value}" + (f" ({dist})" if dist else "")
            try:
                spec = ep.load()
            except Exception as err:  # a broken plugin is one line, not an import traceback
                raise UnknownName(f"{where}: cannot load it ({type(err).__name__}: {err})") from None
            if not isinstance(spec, KindSpec):
                raise UnknownName(f"{where}: is not a KindSpec")
            if spec.name in self._entries:
                raise UnknownName(f"{where}: task kind {spec.name!r} is already registered")
            self.add(spec)

    def _sync_env(self) -> None:
        if not self._entry_points_read:
            self._read_entry_points()
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
        """A fresh engine for ``name`` (the ``HARNESS_ENGINES`` override when one is set),
        checked against the ``Engine`` protocol."""
        spec = self.get(name)  # first: it reads HARNESS_ENGINES
        ref = self._engine_overrides.get(name, spec.engine)
        engine = load_object(ref)()
        if ref not in self._engines_checked:
            problem = engine_problem(engine)
            if problem:
                raise EngineMismatch(
                    f"engine {ref} of task kind {name!r} does not follow the Engine protocol "
                    f"(harness.spec.kinds.Engine): {problem}"
                )
            self._engines_checked.add(ref)
        return engine

    def replayer(self, name: str) -> KindReplayer | None:
        """The replayer kind ``name`` names (None: it is not replayed), resolved and checked
        against the ``KindReplayer`` protocol; a reference that names nothing is one line."""
        ref = self.get(name).replayer
        if ref is None:
            return None
        where = f"replayer {ref} of task kind {name!r}"
        try:
            obj = load_object(ref)
        except (ImportError, AttributeError) as err:
            raise ReplayerMismatch(f"{where}: cannot load it ({type(err).__name__}: {err})") from None
        except UnknownName as err:
            raise ReplayerMismatch(f"{where}: {err}") from None
        lacks = [m for m in ("support", "replay") if not callable(getattr(obj, m, None))]
        if lacks or not isinstance(getattr(obj, "stages", None), tuple):
            what = ", ".join([f"{m}()" for m in lacks] + ([] if lacks else ["a stages tuple"]))
            raise ReplayerMismatch(f"{where} is not a replayer (harness.spec.kinds.KindReplayer): it lacks {what}")
        replayer: KindReplayer = obj
        return replayer

    def replayed(self) -> list[str]:
        """The kinds that name a replayer."""
        return [name for name in self.names() if self.get(name).replayer is not None]

    def of_task(self, task: Any) -> str:
        """The kind whose task model ``task`` is an instance of."""
        for name in self.names():
            if type(task) is self.get(name).task_class():
                return name
        raise UnknownName(f"unknown task kind for {type(task).__name__}; available: {', '.join(self.names())}")

    def infer(self, doc: dict[str, Any]) -> str | None:
        """The kind a document without a kind is: the first whose ``recognised_by`` fields it
        carries (staged kinds first: their documents hold their stages' fields), else the
        fallback kind (None when no kind is one)."""
        names = self.names()
        staged = [n for n in names if self.get(n).stages]
        for name in staged + [n for n in names if n not in staged]:
            if not doc.keys().isdisjoint(self.get(name).recognised_by):
                return name
        return next((n for n in names if self.get(n).fallback), None)


KINDS = KindRegistry()

# --- the built-in kinds: one line each ------------------------------------------------------
_AUDIO_RUNNER = NodeRunner(
    package="audio_task",
    upstream="Crynux audio-task, github.com/crynux-ai/audio-task",
    interface="audio",
    extensions=("audio_prompt", "unconditional"),
)
_GPT_RUNNER = NodeRunner(
    package="gpt_task", upstream="Crynux gpt-task, github.com/crynux-network/gpt-task", interface="gpt"
)
KINDS.add(
    KindSpec(
        name="audio",
        task_model="harness.spec.tasks:AudioTask",
        engine="harness.engines.musicgen:MusicgenEngine",
        neighbours="harness.engines.musicgen:neighbours",
        discrete="codes",
        steps=("codes",),
        schema_file="text-to-audio-task.schema.json",
        fallback=True,
        node_runner=_AUDIO_RUNNER,
        replayer="harness.execution.replay.audio:AUDIO",
        network_rule=(
            "composite",
            "proposed: the network has no audio rule; codes equal and waveform "
            "within the calibrated bounds (harness calibrate)",
        ),
        cheats={"composite": "harness.compare.cheats:audio_cheats", "replay": "harness.compare.cheats:audio_cheats"},
    )
)
KINDS.add(
    KindSpec(
        name="gpt",
        task_model="harness.spec.tasks:GPTTask",
        engine="harness.engines.textgen:TextgenEngine",
        neighbours="harness.engines.textgen:neighbours",
        discrete="token_ids",
        steps=("token_ids",),
        schema_file="gpt-inference-task.schema.json",
        recognised_by=("messages",),
        node_runner=_GPT_RUNNER,
        replayer="harness.execution.replay.text:TEXT",
        validator_rules=("tokens", "replay"),  # a text result has no waveform to bound
        network_rule=(
            "result_hash",
            "network: sha256 of the result JSON file (crynux-node "
            "get_gpt_resp_hash; relay compares score strings for equality)",
        ),
    )
)
KINDS.add(
    KindSpec(
        name="audioldm",
        task_model="harness.spec.tasks:AudioLDMTask",
        engine="harness.engines.audioldm:AudioLDMEngine",
        neighbours="harness.engines.audioldm:neighbours",
        steps=("latents",),
        schema_file="audioldm-task.schema.json",
        validator_rules=("tolerance", "perceptual"),  # no tokens to compare or replay
        recognised_by=("negative_prompt", "num_inference_steps", "audio_length_in_s", "num_waveforms_per_prompt"),
        network_rule=("result_hash", "proposed: sha256 of the waveform (no discrete output; no calibrated rule)"),
    )
)
KINDS.add(
    KindSpec(
        name="chain",
        task_model="harness.spec.tasks:ChainTask",
        engine="harness.engines.chain:ChainEngine",
        neighbours="harness.engines.chain:neighbours",
        model_key="harness.engines.chain:model_key",
        discrete="codes",
        steps=("codes", "latents"),
        upstream_discrete="text_token_ids",
        stages=("text_stage", "audio_stage"),
        attribute_stage="harness.compare.chain:attribute_stage",
        replayer="harness.execution.replay.chain:CHAIN",
        schema_file="chain-task.schema.json",
        recognised_by=("stages", "text_stage"),
        network_rule=("composite", "proposed: both stages' tokens equal and waveform within the calibrated bounds"),
    )
)
