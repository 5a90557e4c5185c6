"""The determinism profile: what a node sets so the same task gives the same bytes.

Why a profile applied in two phases: ``CUBLAS_WORKSPACE_CONFIG`` only takes effect when it is
in the environment before CUDA initialises, which is why the network's runners, which set it
inside the task call of a long-lived process, can be too late. ``apply_environment`` runs in
a fresh worker before torch is imported; ``apply_runtime`` sets torch's flags afterwards;
``record_state`` reports what was actually in force rather than what was asked.
"""

from __future__ import annotations

import os
import random
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("on", "off")
TF32_MODES = ("off", "on")
# Environment a deterministic CUDA run needs before CUDA starts (and what the network sets).
DETERMINISTIC_ENV = {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}
RECORDED_ENV = (
    "CUBLAS_WORKSPACE_CONFIG",
    "CUDA_LAUNCH_BLOCKING",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "PYTHONHASHSEED",
    "NVIDIA_TF32_OVERRIDE",
    "CUDA_VISIBLE_DEVICES",
)
NONDETERMINISM_MARKERS = ("deterministic", "nondeterministic", "non-deterministic", "CUBLAS_WORKSPACE_CONFIG")


@dataclass
class CapturedWarnings:
    messages: list[str] = field(default_factory=list)

    @property
    def nondeterministic(self) -> list[str]:
        return [m for m in self.messages if any(k.lower() in m.lower() for k in NONDETERMINISM_MARKERS)]


def apply_environment(profile: str, isa: str = "native", tf32: str = "off") -> dict[str, str]:
    """Set environment variables that must precede torch/CUDA start: the profile's, the CPU
    kernel set's (harness.isa; native sets none) and TF32's. Returns what it set."""
    import harness.isa as kernel_sets

    if profile not in PROFILES:
        raise ValueError(f"unknown determinism profile {profile!r}; expected one of {PROFILES}")
    if tf32 not in TF32_MODES:
        raise ValueError(f"unknown tf32 mode {tf32!r}; expected one of {TF32_MODES}")
    applied: dict[str, str] = dict(kernel_sets.apply(isa))
    if tf32 == "on" and os.environ.get("NVIDIA_TF32_OVERRIDE") == "0":
        # inherited (the user's shell, or a parent that applied the profile): the driver would
        # keep TF32 off under a cell that asked for it, while torch's flags said it was on
        del os.environ["NVIDIA_TF32_OVERRIDE"]
        applied["NVIDIA_TF32_OVERRIDE"] = ""  # removed
    if profile == "on":
        for key, value in DETERMINISTIC_ENV.items():
            os.environ[key] = value
            applied[key] = value
        if tf32 == "off":  # the driver-level switch: no library can turn TF32 back on
            os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
            applied["NVIDIA_TF32_OVERRIDE"] = os.environ["NVIDIA_TF32_OVERRIDE"]
    return applied


def cuda_started() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


@contextmanager
def torch_threads(threads: int | None = None) -> Iterator[int]:
    """Run with ``threads`` torch threads (None: as they are) and give the count back after,
    whatever happens inside; yields the count in force before."""
    import torch

    before = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(int(threads))
        yield before
    finally:
        torch.set_num_threads(before)


def apply_runtime(profile: str, threads: int | None = None, tf32: str = "off") -> None:
    """torch flags: deterministic algorithms, cuDNN, IEEE fp32 matmul (TF32 off unless
    ``tf32 = "on"``), threads."""
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    if profile == "on":
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = False
    if profile == "on" or tf32 == "on":  # with the profile off and tf32 off: torch's own defaults
        on = tf32 == "on"
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on
        torch.set_float32_matmul_precision("high" if on else "highest")


def seed_everything(seed: int) -> None:
    """Seed python, numpy, torch and every CUDA device, as ``transformers.set_seed`` does."""
    from transformers import set_seed

    random.seed(seed)
    set_seed(seed)


def record_state() -> dict[str, Any]:
    """The flags actually in force now (recorded with every run, never assumed)."""
    import torch

    state: dict[str, Any] = {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "deterministic_warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
        "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        # float16 / bfloat16 GEMMs may reduce in reduced precision (cuBLAS split-K): another
        # reason two batch sizes can differ on a GPU; on by default in torch
        "cuda_matmul_fp16_reduced_precision": bool(torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction),
        "cuda_matmul_bf16_reduced_precision": bool(torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction),
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "env": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
    }
    return state


@contextmanager
def capture_warnings() -> Iterator[CapturedWarnings]:
    """Collect every warning raised inside (torch's non-deterministic-op warnings among them)."""
    captured = CapturedWarnings()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield captured
    seen = set()
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in seen:
            seen.add(text)
            captured.messages.append(text[:500])
