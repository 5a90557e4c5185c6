"""The ``node-runner`` engine: the network's own runner package runs the task, the harness watches.

Why: the harness's engines are proven byte-identical to the reference runners (``tests/peer``),
but an operator certifying a node wants the code that node runs, whatever version and patches
it carries. This engine calls ``audio_task.inference.run_task`` (MusicGen text-to-audio) or
``gpt_task.inference.run_task`` (GPT) from whatever package is importable, and captures what
the comparison needs through the model objects the runner builds: the EnCodec codes around
``audio_encoder.decode`` (as ``harness.engines.musicgen`` does) and the token ids returned by
``model.generate``.

The runner is handed a model cache of this engine's own (``_PipeCache``, the runners'
``model_cache.load(key, loader)`` interface), which is how the capture reaches a pipeline the
runner builds inside its call, and how the load order is honoured: a ``cold`` cell gives the
runner an empty cache, so the runner seeds and then builds the pipeline itself (a node's first
task); a ``warm`` cell runs on a cache that already holds the pipeline (the first warm call on
a new cache builds it with a short run of the same task first, as an earlier task on the
node would have).

What the runner decides stays the runner's: it picks its device (CUDA when available, else
the CPU), sets its own determinism flags, and loads with ``trust_remote_code=True``. A cell
asking for another device than the runner would use is skipped with the reason. ``tiny:``
models are given to the runner as their folders, and the GPT response's ``model`` field is put
back to the task's string (a node never sees tiny models; the rest of the response is the
runner's, byte for byte).
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from harness.engines.base import LoadedModel, Stopwatch
from harness.models.loading import UnsupportedConfiguration, count_quantized, is_builtin, resolve_model
from harness.outputs import Output
from harness.spec.kinds import KINDS, NodeRunner, load_object
from harness.spec.tasks import AudioGenerationConfig, AudioTask, GPTGenerationConfig, GPTTask, task_to_doc

if TYPE_CHECKING:  # torch and transformers are imported where they are used
    import torch
    from transformers import GenerationConfig

    from harness.engines.musicgen import _CodeRecorder

PRIME_MAX_NEW_TOKENS = 16  # the short task that fills a warm cache


def runner_support(kind: str) -> NodeRunner:
    """How the network's runner runs ``kind`` (its ``KindSpec.node_runner``); one clear error
    when no runner does."""
    support = KINDS.get(kind).node_runner
    if support is None:
        runnable = [k for k in KINDS.names() if KINDS.get(k).node_runner is not None]
        raise UnsupportedConfiguration(
            f"engine 'node-runner' runs {' and '.join(runnable)} tasks only (the network's runners), not {kind} tasks"
        )
    return support


def require_runner_packages(kinds: set[str] | Sequence[str]) -> None:
    """One clear error naming the runner package a kind needs when it is not importable."""
    for kind in sorted(kinds):
        support = runner_support(kind)
        if importlib.util.find_spec(support.package) is None:
            raise UnsupportedConfiguration(
                f"engine 'node-runner' needs the network runner package {support.package!r} ({support.upstream}), "
                f"which is not importable here: install it, or put its src/ folder on PYTHONPATH"
            )


def _runner_inference(support: NodeRunner) -> ModuleType:
    """The runner's inference module, through the kind registry's lazy references: its package
    is named by the registry (the code, or the operator's plugins), never by a task or a matrix."""
    load_object(f"{support.package}.inference:run_task")
    return sys.modules[f"{support.package}.inference"]


def runner_model(ref: str) -> str:
    """What the runner is given as ``model``: a tiny model's or stand-in's folder, anything else as the task says."""
    return resolve_model(ref).path if is_builtin(ref) else ref


def runner_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _PipeCache:
    """The runners' model-cache interface; remembers the pipeline and lets the engine attach
    its recorders to it whether the runner builds it now or takes it from here."""

    def __init__(self) -> None:
        # the runners' pipelines (transformers pipelines the runner package builds): Any
        self.pipes: dict[str, Any] = {}
        self.on_pipe: Callable[[Any], None] | None = None
        self.build_s = 0.0

    def load(self, key: str, loader: Callable[[], Any]) -> Any:
        if key not in self.pipes:
            start = time.perf_counter()
            self.pipes[key] = loader()
            self.build_s += time.perf_counter() - start
        pipe = self.pipes[key]
        if self.on_pipe is not None:
            self.on_pipe(pipe)
        return pipe

    def clear(self) -> None:
        self.pipes.clear()


class _AudioCapture:
    """The EnCodec codes MusicGen decodes, recorded on whatever pipeline the runner uses."""

    def __init__(self, watch: Stopwatch):
        self.watch = watch
        self.recorder: _CodeRecorder | None = None

    @property
    def calls(self) -> list[npt.NDArray[np.int64]]:
        return self.recorder.calls if self.recorder is not None else []

    def attach(self, pipe: Any) -> None:
        from harness.engines.musicgen import _CodeRecorder

        self.detach()
        self.recorder = _CodeRecorder(pipe.model.audio_encoder, self.watch).__enter__()

    def detach(self) -> None:
        if self.recorder is not None:
            self.recorder.__exit__(None, None, None)


class _GenerateCapture:
    """Wraps ``model.generate`` (an instance attribute shadowing the method) to keep the
    prompt width, the generation config and the sequences it returns."""

    def __init__(self) -> None:
        # the runner pipeline's model (a transformers model the runner builds): Any
        self.model: Any = None
        self.prompt_width = 0
        self.sequences: torch.Tensor | None = None
        self.generation_config: GenerationConfig | None = None

    def attach(self, pipe: Any) -> None:
        model = self.model = pipe.model
        original = type(model).generate.__get__(model)

        def generate(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            ids = kwargs.get("input_ids", args[0] if args else None)
            self.prompt_width = 0 if ids is None else int(ids.shape[1])
            self.sequences = getattr(out, "sequences", out)
            self.generation_config = kwargs.get("generation_config") or model.generation_config
            return out

        model.generate = generate

    def detach(self) -> None:
        if self.model is not None and "generate" in vars(self.model):
            del self.model.generate


class NodeRunnerEngine:
    """One engine for every kind a runner runs; ``kind`` says which runner package it calls and
    its interface which ``run_task`` signature (the network's audio or gpt runner) that has."""

    def __init__(self, kind: str):
        require_runner_packages({kind})
        self.kind = kind
        support = runner_support(kind)
        self.package, self.interface = support.package, support.interface
        self.inference = _runner_inference(support)

    def load(self, task: AudioTask | GPTTask, device: str) -> LoadedModel:
        """Nothing is loaded here: the runner builds its pipeline inside its own call (after its
        own ``set_seed``). Checks that the runner would run on the asked device."""
        if device.split(":")[0] != runner_device() or device not in ("cpu", "cuda", "cuda:0"):
            raise UnsupportedConfiguration(
                f"the network runner chooses its device itself ({runner_device()} here); this cell asks for {device}"
            )
        resolved = resolve_model(task.model)
        runner_file = self.inference.__file__
        if runner_file is None:  # a module not loaded from a file has no folder to report
            raise UnsupportedConfiguration(f"the runner module {self.inference.__name__} has no file to locate it by")
        meta = {
            "engine": "node-runner",
            "runner_package": self.package,
            "runner_path": str(Path(runner_file).resolve().parents[1]),
            "model_path_source": resolved.source,
            "weights_sha256": resolved.weights_sha256,
        }
        return LoadedModel(
            key=(task.model, task.dtype, task.quantize_bits, device), objects={"cache": _PipeCache()}, meta=meta
        )

    def run(
        self,
        loaded: LoadedModel,
        task: AudioTask | GPTTask,
        device: str,
        neighbours: Sequence[Any] = (),
        seeded: bool = False,
    ) -> Output:
        """``seeded=True`` (a cold cell, on a freshly loaded and so empty cache): the runner seeds
        and builds its pipeline itself. Otherwise (warm) an empty cache is filled first by a
        short run of the same task, so the real call is served from the cache."""
        if neighbours:
            raise ValueError("engine 'node-runner' runs one task per call (batch_size 1), as a node does")
        cache: _PipeCache = loaded.objects["cache"]
        watch = Stopwatch(device)
        built_before = cache.build_s
        if not seeded and not cache.pipes:
            with watch.section("load_s"):
                self._call(self._prime(task), cache)
        capture = _AudioCapture(watch) if self.interface == "audio" else _GenerateCapture()
        cache.on_pipe = capture.attach
        try:
            with watch.section("generate_s"):
                result = self._call(task, cache)
        finally:
            cache.on_pipe = None
            capture.detach()
        pipe = next(iter(cache.pipes.values()))
        if cache.build_s > built_before and "load_s" not in watch.times:
            watch.times["load_s"] = cache.build_s - built_before  # the runner built its pipeline in this call
            watch.times["generate_s"] -= watch.times["load_s"]
        loaded.meta.update(
            quantization=count_quantized(pipe.model, task.quantize_bits).as_dict(),
            resolved_dtype=str(pipe.model.dtype).replace("torch.", ""),
        )
        if isinstance(capture, _AudioCapture):  # the audio interface's capture
            return _audio_output(self.kind, result, capture, watch)
        return _gpt_output(self.kind, task, result, capture, pipe, watch)

    @staticmethod
    def _prime(task: AudioTask | GPTTask) -> AudioTask | GPTTask:
        """The same model, dtype and quantization (so the runner's cache key matches), briefly."""
        gen = task.generation_config.model_dump(exclude_none=True) if task.generation_config else {}
        gen["max_new_tokens"] = min(gen.get("max_new_tokens", PRIME_MAX_NEW_TOKENS), PRIME_MAX_NEW_TOKENS)
        config = AudioGenerationConfig if isinstance(task, AudioTask) else GPTGenerationConfig
        return task.model_copy(update={"generation_config": config(**gen)})

    def _call(self, task: AudioTask | GPTTask, cache: _PipeCache) -> Any:
        """The runner's ``run_task`` with the task's fields; its wrapped errors are unwrapped into
        one line naming the cause."""
        run_task = self.inference.run_task
        doc = task_to_doc(task)
        common = {
            "model": runner_model(task.model),
            "seed": task.seed,
            "dtype": task.dtype,
            "quantize_bits": task.quantize_bits,
            "model_cache": cache,
            "generation_config": _without_none(doc.get("generation_config")),
        }
        if self.interface == "audio":
            if not isinstance(task, AudioTask):
                raise TypeError(f"the network's audio runner runs audio tasks, not {type(task).__name__}")
            kwargs = {**common, "prompt": task.prompt}
        else:
            kwargs = {
                **common,
                "messages": [_without_none(m) for m in doc["messages"]],
                "tools": doc.get("tools"),
                "template_args": doc.get("template_args"),
            }
        try:
            return run_task(**kwargs)
        except Exception as err:
            cause = err.__cause__ or err.__context__ or err
            raise RuntimeError(
                f"network runner {self.package} failed: {type(err).__name__}: "
                f"{type(cause).__name__}: {str(cause).splitlines()[0] if str(cause) else ''}"
            ) from err


def _audio_output(kind: str, result: Any, capture: _AudioCapture, watch: Stopwatch) -> Output:
    audio, rate = result
    waveform = np.ascontiguousarray(np.asarray(audio, dtype=np.float32))  # (samples, channels)
    arrays = {"waveform": waveform}
    meta: dict[str, Any] = {"batch_size": 1, "new_tokens": None}
    if capture.calls:
        codes = capture.calls[-1]  # (1, batch, codebooks, frames) for mono models
        arrays["codes"] = np.ascontiguousarray(codes[0, 0].T) if codes.ndim == 4 else codes[0]
        meta["new_tokens"] = int(arrays["codes"].shape[0])
    has_codes = "codes" in arrays
    return Output(
        kind=kind,
        arrays=arrays,
        sampling_rate=int(rate),
        discrete="codes" if has_codes else None,
        steps="codes" if has_codes else None,
        timings=dict(watch.times),
        meta=meta,
    )


def _gpt_output(
    kind: str,
    task: AudioTask | GPTTask,
    response: dict[str, Any],
    capture: _GenerateCapture,
    pipe: Any,
    watch: Stopwatch,
) -> Output:
    from harness.engines.textgen import _eos_ids, token_id_rows

    if is_builtin(task.model):
        response = {**response, "model": task.model}
    if capture.sequences is None or capture.generation_config is None:
        raise RuntimeError("the network runner did not call model.generate: there are no token ids to capture")
    rows = capture.sequences[:, capture.prompt_width :].to("cpu").numpy().astype(np.int64)
    token_ids = token_id_rows(rows, _eos_ids(capture.generation_config, pipe.tokenizer))
    return Output(
        kind=kind,
        arrays={"token_ids": token_ids},
        response=response,
        discrete="token_ids",
        steps="token_ids",
        timings=dict(watch.times),
        meta={"batch_size": 1, "new_tokens": int((token_ids >= 0).sum())},
    )


def _without_none(doc: Any) -> Any:
    return {k: v for k, v in doc.items() if v is not None} if isinstance(doc, dict) else doc
