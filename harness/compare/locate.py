"""Locate a divergence to the first module (layer or operation) whose output differs.

Why: the comparison levels say *at which generation step* two executions part; an engineer
then asks *where in the network* it began (a matmul reduction order in one projection, a
quantized layer, a kernel that is not deterministic). Here both cells are re-executed, each
once, with forward hooks on every module of the loaded model; at the step of interest every
module output is digested (sha256 of its bytes) and kept, in the order the hooks fire (a
child finishes before its parent, so the first differing entry is the innermost, earliest
operation). The first (module, call) whose digests differ is named with its max-abs and
rel-L2 difference.

Soundness: hooks only read; they are removed afterwards (``Hooks`` is a context manager), and
each re-run's output digest must equal the recorded one -- a divergence that does not
reproduce in the re-run (e.g. it only happened in another process) cannot be located, and
the location is refused as unsound rather than guessed.

Steps: the stepping module's forward calls are counted (MusicGen's decoder, GPT-2's language
model, AudioLDM's UNet): call k is generation step k (step 0 holds the prompt). Modules that
run outside the steps (the text encoder before, the EnCodec decoder or VAE/vocoder after) are
always recorded, with step ``OUTSIDE``; the trace is in firing order, so the first difference
is the earliest in time (a thread-count difference usually starts in the text encoder). The engines are not changed:
hooks are registered from outside on the objects ``harness.engines.base.ModelCache`` holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

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


class Location(BaseModel):
    step: int  # -1: outside the generation steps (encoder before, decoder after)
    module: str | None  # "name#call[.output]" of the first differing output; None: all equal
    max_abs: float | None = None
    rel_l2: float | None = None
    compared: int = 0  # module outputs compared before (and including) the first difference
    shape: list[int] | None = None
    note: str = ""


def first_difference(a: Trace, b: Trace) -> Location:
    """The first module output (in firing order) whose digest differs between two traces."""
    from harness.compare.levels import float_metrics

    seen_b = {(key, step): (d, arr) for key, d, arr, step in b.entries}
    for i, (key, digest, arr, step) in enumerate(a.entries, start=1):
        other = seen_b.get((key, step))
        if other is None:
            return Location(step=step, module=key, compared=i, note="no such output on the other side")
        if other[0] != digest:
            if arr.shape != other[1].shape:
                return Location(
                    step=step,
                    module=key,
                    compared=i,
                    shape=list(arr.shape),
                    note=f"shapes differ: {list(arr.shape)} vs {list(other[1].shape)}",
                )
            m = float_metrics(arr.reshape(-1).astype(np.float64), other[1].reshape(-1).astype(np.float64))
            return Location(
                step=step, module=key, max_abs=m["max_abs"], rel_l2=m["rel_l2"], compared=i, shape=list(arr.shape)
            )
    return Location(
        step=a.step, module=None, compared=len(a.entries), note="every module output is identical at this step"
    )


def operation_hint(module: str | None) -> str:
    """What kind of operation the module is, for the sentence a person reads."""
    if not module:
        return ""
    leaf = module.split("#")[0].rsplit(".", 1)[-1]
    if leaf in ("q", "k", "v", "o", "wi", "wo", "wi_0", "wi_1"):  # T5's projections
        return "matmul reduction order"
    for keys, what in (
        (
            (
                "q_proj",
                "k_proj",
                "v_proj",
                "out_proj",
                "fc1",
                "fc2",
                "c_attn",
                "c_proj",
                "c_fc",
                "lm_head",
                "proj",
                "linear",
                "dense",
            ),
            "matmul reduction order",
        ),
        (
            ("layer_norm", "ln_1", "ln_2", "ln_f", "norm", "self_attn_layer_norm", "final_layer_norm"),
            "normalisation reduction",
        ),
        (("conv", "conv1d", "conv2d"), "convolution"),
        (("embed_tokens", "wte", "wpe"), "embedding lookup"),
    ):
        if any(k in leaf for k in keys):
            return what
    return "operation"
