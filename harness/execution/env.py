"""Environment fingerprint: what hardware and software produced a run.

Why: when two machines disagree, the first question is *what* differed (GPU model, driver,
CUDA, torch, transformers, bitsandbytes, threads, flags). Everything is read, never assumed.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from harness import isa
from harness.execution import readback

LIBRARIES = (
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "bitsandbytes",
    "diffusers",
    "numpy",
    "scipy",
    "safetensors",
    "consensus-harness",
)
# Fields whose difference makes two runs' costs "not comparable" (outputs are still compared).
COST_KEYS = ("machine", "processor", "cpu_count", "gpu_names", "torch", "cuda_runtime")


def code_digest() -> str:
    """sha256 over the harness package's Python sources (relative path and bytes of each).

    Why: a Ray node runs the harness installed on it, not the driver's. Two builds that both
    say version 0.1.0 can name cells differently or compute other outputs, so the driver sends
    its digest with every job and a node with another refuses the job instead of running it.
    """
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def code_refusal(driver_code: str | None, here: str | None, who: str = "this node") -> str | None:
    """Why a worker importing harness code ``here`` must not run the driver's cells (None
    when the code is the same): a Ray node, or a stack, with another harness build."""
    if driver_code == here:
        return None
    return (
        f"{who} runs another harness build (code {str(here)[:12]}, the driver's {str(driver_code)[:12]}); "
        f"install the driver's harness there"
    )


def library_changes(a: dict[str, Any] | None, b: dict[str, Any] | None) -> list[str]:
    """``name A -> B`` for each library whose version differs between two executions' libraries."""
    if not a or not b:
        return []
    return [
        f"{n} {a.get(n) or 'absent'} -> {b.get(n) or 'absent'}" for n in sorted(set(a) | set(b)) if a.get(n) != b.get(n)
    ]


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint() -> dict[str, Any]:
    """Hardware, driver, CUDA and library versions, threads and determinism-relevant flags."""
    import torch

    env: dict[str, Any] = {
        "hostname_hash": __import__("hashlib").sha256(platform.node().encode()).hexdigest()[:12],
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "libraries": {name: _version(name) for name in LIBRARIES},
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_runtime": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu_names": [],
        "driver": None,
        "blas": _blas(),
        "cpu_flags": sorted(isa.cpu_flags() or []),
        "kernels": kernels_in_force(),
    }
    if torch.cuda.is_available():
        env["gpu_names"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["gpu_capability"] = [list(torch.cuda.get_device_capability(i)) for i in range(torch.cuda.device_count())]
        # VRAM: the network pools nodes by GPU model, then VRAM
        env["gpu_memory_bytes"] = [
            int(torch.cuda.get_device_properties(i).total_memory) for i in range(torch.cuda.device_count())
        ]
        env["driver"] = _nvidia_driver()
    return env


_KERNELS: dict[str, Any] | None = None


def kernels_in_force() -> dict[str, Any]:
    """The CPU kernels this process really runs, read back from each library (measured once:
    the caps are read when each library starts, so they cannot change afterwards).

    ``isa`` is the level asked for (harness.isa; ``native`` when none), ``aten`` ATen's
    dispatch capability, ``onednn`` the ISA oneDNN reports, ``blas`` oneMKL's code path,
    ``env`` the switches as the environment set them, ``class`` the short kernel class."""
    global _KERNELS
    if _KERNELS is None:
        import torch

        aten = torch.backends.cpu.get_cpu_capability()
        key = readback.cache_key(torch)
        onednn = readback.remembered(key, "onednn", _onednn_line) if torch.backends.mkldnn.is_available() else None
        blas = readback.remembered(key, "blas", _mkl_code_path) if torch.backends.mkl.is_available() else None
        _KERNELS = {
            "isa": os.environ.get(isa.LEVEL_VARIABLE, isa.NATIVE),
            "aten": aten,
            "onednn": onednn.split("isa:", 1)[1].strip() if onednn else None,
            "blas": blas,
            "env": {k: os.environ[k] for k in isa.KNOBS if k in os.environ},
        }
        _KERNELS["class"] = isa.kernel_class(aten, _KERNELS["onednn"])
    return dict(_KERNELS)


def _onednn_line() -> str | None:
    """oneDNN's verbose ``isa:`` line (one convolution's run: see harness.execution.readback)."""
    return _verbose_line(_onednn_probe, "isa:")


def _mkl_code_path() -> str | None:
    """oneMKL's code path from its verbose banner (slow: see harness.execution.readback)."""
    banner = _verbose_line(_mkl_probe, "MKL_VERBOSE oneMKL")
    return banner.split(" architecture ", 1)[-1].split(", Lnx")[0].strip() if banner else None


def _onednn_probe() -> None:
    import torch

    with torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
        torch.nn.functional.conv2d(torch.ones(1, 8, 64, 64), torch.ones(8, 8, 3, 3))


def _mkl_probe() -> None:
    import torch

    with torch.backends.mkl.verbose(torch.backends.mkl.VERBOSE_ON):
        a = torch.ones(64, 64)
        torch.mm(a, a)


def _verbose_line(probe: Any, marker: str) -> str | None:
    """The first line holding ``marker`` that ``probe`` prints from C on file descriptor 1."""
    import sys
    import tempfile

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 1)
            try:
                probe()
            finally:
                sys.stdout.flush()
                os.dup2(saved, 1)
            tmp.seek(0)
            text = tmp.read().decode("utf-8", "replace")
    except (OSError, RuntimeError):
        return None
    finally:
        os.close(saved)
    return next((line for line in text.splitlines() if marker in line), None)


def _blas() -> str | None:
    try:
        import torch

        cfg = torch.__config__.show()
        for key in ("BLAS_INFO=", "LAPACK_INFO="):
            if key in cfg:
                return cfg.split(key, 1)[1].split(",", 1)[0].strip()
    except Exception:
        return None
    return None


def _nvidia_driver() -> str | None:
    """The NVIDIA driver version: from /proc (absent in some sandboxes and VMs, e.g. gVisor),
    else NVML (nvidia-ml-py), else ``nvidia-smi``; None when none answers."""
    try:
        with open("/proc/driver/nvidia/version") as fh:
            first = fh.readline()
        version = first.split("Kernel Module")[1].split()[0] if "Kernel Module" in first else first.strip()
        if version:
            return version
    except (OSError, IndexError):
        pass
    return _nvml_driver() or _smi_driver()


def _nvml_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            version = pynvml.nvmlSystemGetDriverVersion()
        finally:
            pynvml.nvmlShutdown()
        return (version.decode() if isinstance(version, bytes) else str(version)).strip() or None
    except Exception:  # not installed, no library, no device: the next source is asked
        return None


def _smi_driver() -> str | None:
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = [line.strip() for line in out.stdout.splitlines() if line.strip()]
    return lines[0] if out.returncode == 0 and lines else None


def cost_key(env: dict[str, Any]) -> str:
    """A short key: runs with different keys are 'not comparable' for costs."""
    from harness.digests import digest_json

    return digest_json({k: env.get(k) for k in COST_KEYS})[:12]


def differing_fields(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted names of fields that differ between two fingerprints (what differed)."""
    out: list[str] = []
    for key in sorted(set(a) | set(b)):
        if key == "hostname_hash":
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += differing_fields(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def env_value(env: dict[str, Any], dotted: str) -> Any:
    """A fingerprint's field by its dotted name (``libraries.torch``), as differing_fields names it."""
    cur: Any = env
    for part in dotted.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    return cur


def described_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """``differing_fields`` with both values where they are plain (``libraries.transformers
    5.25.0 -> 5.24.0``): what a comparison across runs or machines names as what differed."""
    out = []
    for name in differing_fields(a, b):
        va, vb = env_value(a, name), env_value(b, name)
        plain = all(v is None or isinstance(v, (str, int, float, bool)) for v in (va, vb))
        out.append(f"{name} {va} -> {vb}" if plain else name)
    return out


# Fields that can change outputs between machines (threads aside): a node's environment class.
CLASS_KEYS = ("machine", "processor", "gpu_names", "gpu_capability", "driver", "cuda_runtime", "cudnn", "torch", "blas")
CLASS_LIBRARIES = ("torch", "transformers", "tokenizers", "accelerate", "bitsandbytes", "diffusers", "numpy")


def environment_class(env: dict[str, Any], cpus: int | None = None) -> str:
    """A short readable label for the hardware/software class of a node, e.g.
    ``NVIDIA H100 80GB HBM3 [3f2a9c]`` or ``Intel Xeon ..., 2 CPUs, aten-avx512/onednn-amx [3f2a9c]``
    (the kernel-selecting CPU flags and the kernels in force count: two machines, or two kernel
    levels of one machine, that take different kernels are two classes). Nodes with equal
    labels are expected to agree bitwise; the bracket is a hash of every field that can change
    outputs (driver, CUDA, library versions), so one GPU model on two driver versions is two
    classes. ``cpus`` is the CPU count the node gives a job (Ray's CPU resource on a fleet):
    on the CPU it sets the default thread count, and thread count changes float reductions."""
    from harness.digests import digest_json

    libs = env.get("libraries") or {}
    cpus = cpus if cpus is not None else env.get("cpu_count")
    gpus = sorted(set(env.get("gpu_names") or []))
    doc = {
        **{k: env.get(k) for k in CLASS_KEYS},
        "libraries": {k: libs.get(k) for k in CLASS_LIBRARIES},
        "cpus": None if gpus else cpus,
    }
    kernels = env.get("kernels") if isinstance(env.get("kernels"), dict) else None
    if kernels or env.get("cpu_flags"):  # fingerprints before kernels were read keep their classes
        doc["cpu_flags"] = env.get("cpu_flags")
        doc["kernels"] = {k: (kernels or {}).get(k) for k in ("aten", "onednn", "blas")}
    name = " + ".join(gpus) if gpus else f"{env.get('processor') or env.get('machine') or 'cpu'}, {cpus} CPUs"
    if kernels and not gpus:
        name += f", {kernels.get('class')}"
    return f"{name} [{digest_json(doc)[:6]}]"


def node_fields(
    env: dict[str, Any],
    *,
    key: str,
    hostname: str,
    ray_node_id: str | None = None,
    cpus: int | None = None,
    gpus: float | None = None,
) -> dict[str, Any]:
    """A manifest entry for one node: who it is, its environment fingerprint and class."""
    return {
        "key": key,
        "hostname": hostname,
        "ray_node_id": ray_node_id,
        "cpus": cpus,
        "gpus": gpus,
        "env_class": environment_class(env, cpus),
        "environment": env,
    }
