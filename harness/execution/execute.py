"""Execute one task in this process: seed and load in the asked order, run, measure.

Shared by ``harness exec`` and the workers, so a cell in a matrix runs exactly as a task run
by hand. Costs are measured, not guessed: load, encode, generate and decode are timed
separately; peak memory is ``torch.cuda.max_memory_allocated`` (reset per cell) on a GPU and
the peak resident set size sampled during the cell on the CPU.

Why two load orders: the network's runners call ``set_seed`` and only then build their
pipeline, or take it from their model cache. Building MusicGen draws from torch's CPU
generator: transformers' ``_init_weights`` runs on every EnCodec ``Conv1d`` after the
checkpoint is loaded, and because those convolutions are weight-normed their ``weight`` is
recomputed from ``parametrizations.weight.original0/1`` on each access, a fresh tensor without
the ``_is_hf_initialized`` flag, so ``init.normal_`` and ``kaiming_normal_`` fill it (and throw
it away: the loaded weights are untouched) and advance the generator. Sampling then starts
from another random state, so a node's first task (``cold``: seed, then load) and a later one
served from its cache (``warm``: load, then seed) give other audio for the same task. GPT-2
loads without drawing, so its cold and warm outputs agree.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from harness.determinism import apply_runtime, capture_warnings, record_state, seed_everything
from harness.engines.base import ModelCache, get_engine
from harness.outputs import Output
from harness.spec.kinds import KINDS
from harness.spec.tasks import Task


def neighbours_for(kind: str, task: Task, batch_size: int) -> list[Task]:
    """Other tasks that share the target's forward pass (same settings, other prompts), as
    the kind declares them (``harness.spec.kinds``); a kind that declares none runs alone."""
    spec = KINDS.get(kind)
    if spec.neighbours is not None:
        neighbours: list[Task] = spec.load("neighbours")(task, batch_size)
        return neighbours
    if batch_size > 1:
        raise ValueError(f"batch_size > 1 is not supported for {kind} tasks")
    return []


class PeakRSS:
    """Peak resident set size of this process during a block.

    On Linux the kernel keeps the high-water mark (VmHWM) and writing 5 to
    /proc/self/clear_refs resets it: exact, and no sampling thread competing with the
    generation for the interpreter lock (a 5 ms sampler cost ~10% of a tiny generation).
    Elsewhere a sampling thread at 20 ms is the fallback."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.peak = 0
        self._exact = self._reset_hwm()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return PeakRSS._status("VmHWM") is not None
        except OSError:
            return False

    @staticmethod
    def _status(field: str) -> int | None:
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith(field + ":"):
                        return int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            return None
        return None

    def _rss(self) -> int:
        value = self._status("VmRSS")
        if value is not None:
            return value
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self.peak = self._rss()
        if not self._exact:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._exact:
            self.peak = max(self.peak, self._status("VmHWM") or 0)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak = max(self.peak, self._rss())


@dataclass
class Execution:
    output: Output
    timings: dict[str, float]
    peak_memory_bytes: int
    memory_kind: str
    warnings: list[str] = field(default_factory=list)
    nondeterministic_warnings: list[str] = field(default_factory=list)
    model_meta: dict[str, Any] = field(default_factory=dict)
    determinism: dict[str, Any] = field(default_factory=dict)
    cache_hit: bool = False


def _check_cuda_device(torch: ModuleType, device: str) -> None:
    """``--device cuda:7`` on a CPU-only torch failed deep inside torch with
    ``AttributeError: _cuda_resetPeakMemoryStats``; say what is missing instead."""
    from harness.models.loading import UnsupportedConfiguration

    if not torch.cuda.is_available():
        raise UnsupportedConfiguration(
            f"device {device}: CUDA is not available on this machine (torch {torch.__version__})"
        )
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise UnsupportedConfiguration(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


LOAD_ORDERS = ("cold", "warm")


def task_seed(task: Task) -> int:
    """The seed a task's run starts from (a chain's is its text stage's)."""
    return task.seed if hasattr(task, "seed") else task.text_stage.seed


def execute(
    task: Task,
    kind: str,
    device: str,
    cache: ModelCache,
    *,
    threads: int | None = None,
    profile: str = "on",
    batch_size: int = 1,
    load: str = "warm",
    engine: str | None = None,
    tf32: str = "off",
) -> Execution:
    """Run ``task`` once (inside a batch of ``batch_size``) and measure it.

    ``load="warm"``: the model comes from ``cache`` (loaded if missing) and the engine seeds
    right before generating. ``load="cold"``: seed first, then load a fresh copy, then generate
    without seeding again, as a node's first task runs. ``engine`` picks another engine for
    the kind (``"node-runner"``)."""
    import torch

    if load not in LOAD_ORDERS:
        raise ValueError(f"unknown load order {load!r}; expected one of {', '.join(LOAD_ORDERS)}")
    apply_runtime(profile, threads, tf32=tf32)
    eng = get_engine(kind, engine)
    on_cuda = device.startswith("cuda")
    if on_cuda:
        _check_cuda_device(torch, device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    with capture_warnings() as caught, PeakRSS() as rss:
        neighbours = neighbours_for(kind, task, batch_size)
        if load == "cold":
            seed_everything(task_seed(task))
            loaded, hit = cache.fresh(eng, task, device), False
            output = eng.run(loaded, task, device, neighbours, seeded=True)
        else:
            loaded, hit = cache.get(eng, task, device)
            output = eng.run(loaded, task, device, neighbours)
    if on_cuda:  # the cell's work is done when the device's queue is, not when python returns
        torch.cuda.synchronize(device)
    total = time.perf_counter() - start
    timings = {"load_s": 0.0 if hit else loaded.load_s, **output.timings, "total_s": total}
    peak = int(torch.cuda.max_memory_allocated(device)) if on_cuda else rss.peak
    return Execution(
        output=output,
        timings=timings,
        peak_memory_bytes=peak,
        memory_kind="cuda_max_allocated" if on_cuda else "rss_peak",
        warnings=caught.messages,
        nondeterministic_warnings=caught.nondeterministic,
        model_meta=loaded.meta,
        determinism=record_state(),
        cache_hit=hit,
    )
