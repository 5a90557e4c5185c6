"""What every engine offers, and the model cache a worker keeps between cells.

An engine loads a model for (model, dtype, quantize_bits, device) and runs one task,
optionally inside a batch with neighbour tasks (batch invariance is a known source of
divergence between nodes). Engines stay thin over transformers/diffusers: they make the call
a network node makes and capture what the comparison needs (codes, token ids, latents).

``run`` seeds just before generating (a node serving a task from its model cache) unless the
caller passes ``seeded=True``: it seeded before loading the model, as a node's first task
does (loading can draw random numbers; see ``harness.execution.execute``). The ``Engine``
protocol lives with the kind registry (``harness.spec.kinds``), which checks each kind's
engine against it when it resolves one.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

from harness.spec.kinds import Engine  # the protocol, where the kind registry checks engines against it

#: a loaded model's cache key: (kind's task class, model, dtype, quantize_bits, device) by default
ModelKey = tuple[Hashable, ...]


@dataclass
class LoadedModel:
    key: ModelKey
    objects: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)  # resolved dtype, quantization, weights hash
    load_s: float = 0.0


def model_key(task: Any, device: str) -> ModelKey:
    """The default cache key of a kind's loaded model (a kind may declare its own)."""
    return (type(task).__name__, task.model, task.dtype, task.quantize_bits, device)


def cache_key(task: Any, device: str) -> ModelKey:
    """The key its kind declares for ``task``'s loaded model(s)."""
    from harness.spec.kinds import KINDS

    key_of: Callable[[Any, str], ModelKey] = KINDS.get(KINDS.of_task(task)).load("model_key")
    return key_of(task, device)


# Neighbour prompts for the batch-size axis: different lengths, so the target gets padded.
NEIGHBOUR_PROMPTS = (
    "90s rock song with loud guitars and heavy drums and a bright piano melody over a slow beat",
    "calm jazz",
    "electronic dance music for a crowded night club with bright lights and energy",
    "sad violin",
)


def neighbour_prompts(batch_size: int) -> list[str]:
    """The other prompts of a batch of ``batch_size`` (one fewer than the batch)."""
    return [NEIGHBOUR_PROMPTS[i % len(NEIGHBOUR_PROMPTS)] for i in range(batch_size - 1)]


class ModelCache:
    """Keep the last few loaded models so a worker loads each (model, dtype, quant) once."""

    def __init__(self, capacity: int = 4) -> None:
        self.capacity = capacity
        self._items: OrderedDict[ModelKey, LoadedModel] = OrderedDict()
        self.loads = 0

    def get(self, engine: Engine, task: Any, device: str) -> tuple[LoadedModel, bool]:
        key = cache_key(task, device)
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key], True
        return self.fresh(engine, task, device), False

    def fresh(self, engine: Engine, task: Any, device: str) -> LoadedModel:
        """Load a new copy even when one is cached (a cold start must really load after its
        seed), and keep it for the cells that follow."""
        key = cache_key(task, device)
        self._items.pop(key, None)
        start = time.perf_counter()
        loaded: LoadedModel = engine.load(task, device)  # the protocol types it Any (spec sits below engines)
        loaded.load_s = time.perf_counter() - start
        self.loads += 1
        self._items[key] = loaded
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return loaded


# Engines that run any kind they support, chosen per matrix (``engine = ...``); lazy references
# like the kind registry's, so choosing one imports nothing until it is used.
OTHER_ENGINES = {"node-runner": "harness.engines.node_runner:NodeRunnerEngine"}
ENGINE_NAMES = ("harness", *OTHER_ENGINES)


def get_engine(kind: str, engine: str | None = None) -> Engine:
    """A fresh engine for ``kind``, from the kind registry (``harness.spec.kinds``), which
    imports engines lazily so validation never loads torch and honours ``HARNESS_ENGINES``.
    ``engine="node-runner"`` runs the network's own runner package instead (audio and gpt)."""
    from harness.spec.kinds import KINDS, load_object

    if engine not in (None, "harness"):
        if engine not in OTHER_ENGINES:
            raise ValueError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINE_NAMES)}")
        make: Callable[[str], Engine] = load_object(OTHER_ENGINES[engine])
        return make(kind)
    chosen: Engine = KINDS.engine(kind)
    return chosen


class Stopwatch:
    """Named wall-clock segments; on CUDA it synchronises before reading the clock."""

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.times: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            import torch

            # this device's queue: a bare synchronize() waits for the current device only
            # (cuda:0 unless set), so a cuda:1 cell's sections were timed without waiting
            torch.cuda.synchronize(self.device)

    def section(self, name: str) -> _Section:
        return _Section(self, name)


class _Section:
    """One timed segment of a ``Stopwatch`` (added to its ``times[name]`` on exit)."""

    def __init__(self, watch: Stopwatch, name: str) -> None:
        self.watch = watch
        self.name = name
        self.start = 0.0

    def __enter__(self) -> _Section:
        self.watch._sync()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        watch = self.watch
        watch._sync()
        watch.times[self.name] = watch.times.get(self.name, 0.0) + time.perf_counter() - self.start
        return False
