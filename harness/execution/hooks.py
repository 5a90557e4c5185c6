"""Module hooks on a loaded model, and the locate re-run as a worker job.

Why in execution: hooking a model while it generates is a model execution, so it runs where
every execution runs (the executors' worker: harness.execution.protocol.LocateWork), under
the cell's own kernel level, thread count and profile. Comparing two traces and naming the
first difference is harness.compare.locate's (which explains the method).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from harness.determinism import torch_threads
from harness.errors import WorkflowError

#: kind -> (loaded object, dotted attribute of the module whose forward calls are the steps)
STEPPING = {"audio": ("model", "decoder"), "gpt": ("model", ""), "audioldm": ("pipeline", "unet")}


class LocateError(WorkflowError):
    """A pair that cannot be located (unsound re-run, unsupported kind); one line."""


@dataclass
class Trace:
    """Module outputs of one execution at one step, in hook-firing order."""

    step: int
    #: (name#call, sha256, array, step) in firing order; step -1: outside the generation steps
    entries: list[tuple[str, str, np.ndarray, int]] = field(default_factory=list)
    steps_seen: int = 0


def _tensors(out: Any) -> Iterator[Any]:
    import torch

    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (list, tuple)):
        for x in out:
            yield from _tensors(x)
    elif isinstance(out, dict):
        for x in out.values():
            yield from _tensors(x)
    elif hasattr(out, "to_tuple"):  # transformers ModelOutput
        yield from _tensors(out.to_tuple())


def _stepping_module(kind: str, objects: dict[str, Any]) -> Any:
    owner, attr = STEPPING[kind]
    mod = objects[owner]
    for part in filter(None, attr.split(".")):
        mod = getattr(mod, part)
    return mod


def _modules(objects: dict[str, Any]) -> list[tuple[str, Any]]:
    """(qualified name, module) for every torch module of the loaded objects (pipelines:
    their module components)."""
    import torch

    roots: list[tuple[str, Any]] = []
    for key, obj in objects.items():
        if isinstance(obj, torch.nn.Module):
            roots.append((key, obj))
        elif hasattr(obj, "components"):
            roots += [(f"{key}.{n}", m) for n, m in obj.components.items() if isinstance(m, torch.nn.Module)]
    out: list[tuple[str, Any]] = []
    for prefix, root in roots:
        for name, mod in root.named_modules():
            out.append((f"{prefix}.{name}" if name else prefix, mod))
    return out


class Hooks:
    """Forward hooks that digest every module output at ``step``; removed on exit.

    ``plant``: (module name, step, fn) lets a test change one module's output at one step
    (a planted divergence whose place is known)."""

    OUTSIDE = -1

    def __init__(
        self, kind: str, objects: dict[str, Any], step: int, plant: tuple[str, int, Callable[[Any], Any]] | None = None
    ) -> None:
        if kind not in STEPPING:
            raise LocateError(f"locate supports kinds {', '.join(STEPPING)}, not {kind!r}")
        self.kind, self.objects, self.plant = kind, objects, plant
        self.trace = Trace(step=step)
        self._handles: list[Any] = []
        self._calls: dict[str, int] = {}  # per step, for the stepping modules
        self._outside_calls: dict[str, int] = {}  # over the whole run, for the others
        self._current = self.OUTSIDE
        self._in_steps = False

    def __enter__(self) -> Hooks:
        stepper = _stepping_module(self.kind, self.objects)
        stepper_ids = {id(m) for m in stepper.modules()}

        def pre_step(module: Any, args: Any, kwargs: Any = None) -> None:
            self._current = self.trace.steps_seen
            self.trace.steps_seen += 1
            self._calls.clear()

        self._handles.append(stepper.register_forward_pre_hook(pre_step))
        for name, mod in _modules(self.objects):
            # the stepper, its children and its ancestors (a wrapper whose forward encloses a
            # step) belong to the step in progress
            inside = id(mod) in stepper_ids or any(m is stepper for m in mod.modules())
            self._handles.append(mod.register_forward_hook(self._hook(name, inside)))
        return self

    def _hook(self, name: str, inside: bool) -> Callable[[Any, Any, Any], Any]:
        def hook(module: Any, args: Any, output: Any) -> Any:
            step = self._current if inside else self.OUTSIDE
            if self.plant and self.plant[0] == name and self.plant[1] == step:
                output = self.plant[2](output)
            # the chosen step, and every module outside the steps (the encoder before them, the
            # audio decoder after): the earliest difference in time is then in the trace
            if step == self.trace.step or not inside:
                calls = self._calls if inside else self._outside_calls
                n = calls.get(name, 0)
                calls[name] = n + 1
                for i, t in enumerate(_tensors(output)):
                    cpu = t.detach().to("cpu")
                    arr = cpu.float().numpy() if t.is_floating_point() else cpu.numpy()
                    arr = np.ascontiguousarray(arr)
                    digest = hashlib.sha256(arr.tobytes() + str(arr.shape).encode()).hexdigest()
                    self.trace.entries.append((f"{name}#{n}" + (f".{i}" if i else ""), digest, arr, step))
            return output

        return hook

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def rerun_traced(
    doc: dict[str, Any],
    kind: str,
    *,
    device: str = "cpu",
    threads: int | None = None,
    profile: str = "on",
    step: int = 0,
    plant: tuple[str, int, Callable[[Any], Any]] | None = None,
    cache: Any = None,
) -> tuple[Trace, dict[str, str]]:
    """Execute one task with hooks at ``step``; (trace, output digests). Hooks are removed
    before this returns; torch's thread count is restored."""
    from harness.determinism import apply_environment

    if "torch" not in sys.modules:
        apply_environment(profile)

    from harness.engines.base import ModelCache, get_engine
    from harness.execution.execute import execute
    from harness.spec.tasks import parse_task

    with torch_threads():  # execute sets the cell's threads; the caller's count comes back
        task = parse_task(doc, kind)
        cache = cache if cache is not None else ModelCache()
        loaded, _ = cache.get(get_engine(kind), task, device)
        with Hooks(kind, loaded.objects, step, plant) as hooks:
            ex = execute(task, kind, device, cache, threads=threads, profile=profile)
        return hooks.trace, ex.output.digests()


def perform(cell: Any, task: Any, cache: Any, store: Any) -> dict[str, Any]:
    """In the worker: the cell's task re-run with hooks at the work's step (a fresh model
    cache: a hooked run must not share a model another cell's run left state in); the
    record's digests are the re-run's output digests, its artifact the trace."""
    from harness.engines.base import ModelCache

    axes = cell.axes
    trace, digests = rerun_traced(
        cell.task_doc,
        cell.kind,
        device=axes.device,
        threads=axes.threads,
        profile=axes.profile,
        step=cell.work.step,
        cache=ModelCache(),
    )
    arrays = {f"e{i}": arr for i, (_, _, arr, _) in enumerate(trace.entries)}
    entries = [[key, digest, step] for key, digest, _, step in trace.entries]
    artifact = store.write_artifact(cell.artifact_name, arrays) if arrays else None
    output = {"locate": {"step": trace.step, "steps_seen": trace.steps_seen, "entries": entries}}
    return {"status": "ok", "digests": digests, "output": output, "artifact": artifact}


def trace_of(output: dict[str, Any], arrays: dict[str, np.ndarray]) -> Trace:
    """The trace a locate job sent back (its record's output and artifact)."""
    doc = output["locate"]
    entries = [(key, digest, arrays[f"e{i}"], int(step)) for i, (key, digest, step) in enumerate(doc["entries"])]
    return Trace(step=int(doc["step"]), entries=entries, steps_seen=int(doc["steps_seen"]))
