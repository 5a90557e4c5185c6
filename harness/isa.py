"""CPU kernel sets: the instruction-set level torch, oneDNN and the BLAS may use.

Why: the kernels a library picks by instruction set change outputs. Measured with torch
2.13 CPU (README "Across CPU kinds"): tiny MusicGen in bfloat16 gives other codes under
``ATEN_CPU_CAPABILITY=avx2`` than under AVX-512, and other waveforms under a oneDNN ISA cap.
So one machine can stand in for a fleet of CPU kinds by capping, in a fresh worker before
torch starts, the three switches the libraries honour:

- ATen's dispatch (``ATEN_CPU_CAPABILITY``: ``default``, ``avx2``, ``avx512``), read back with
  ``torch.backends.cpu.get_cpu_capability()``;
- oneDNN's ISA cap (``ONEDNN_MAX_CPU_ISA``), read back from its verbose ``isa:`` line;
- oneMKL's code path (``MKL_ENABLE_INSTRUCTIONS``), read back from its verbose banner.

``native`` sets nothing: whatever the environment already says (a user's or CI's own
``ATEN_CPU_CAPABILITY``) is that machine's kernels. A level the CPU (or such a cap in the
environment) cannot give is refused with the reason, never silently run at another level.
This module is a leaf: it reads /proc/cpuinfo and the environment, never imports torch.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass

from harness.errors import HarnessError

NATIVE = "native"


@dataclass(frozen=True)
class IsaLevel:
    """One emulated CPU kind: what each library is capped at, and the CPU flags it needs."""

    name: str
    rank: int  # higher runs wider kernels; a machine gives every level at or below its own
    aten: str
    onednn: str
    mkl: str
    needs: tuple[str, ...]
    like: str  # which real CPUs take these kernels (README)


_AVX512 = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
LEVELS: dict[str, IsaLevel] = {
    level.name: level
    for level in (
        IsaLevel(
            "avx512_bf16",
            6,
            "avx512",
            "AVX512_CORE_BF16",
            "AVX512_E4",
            (*_AVX512, "avx512_vnni", "avx512_bf16"),
            "AVX-512 with BF16, no AMX: AMD Zen 4/5, Intel Cooper Lake",
        ),
        IsaLevel(
            "avx512_vnni",
            5,
            "avx512",
            "AVX512_CORE_VNNI",
            "AVX512_E2",
            (*_AVX512, "avx512_vnni"),
            "AVX-512 with VNNI: Intel Cascade Lake, Ice Lake",
        ),
        IsaLevel("avx512", 4, "avx512", "AVX512_CORE", "AVX512", _AVX512, "AVX-512 core: Intel Skylake-SP"),
        IsaLevel(
            "avx2_vnni",
            3,
            "avx2",
            "AVX2_VNNI",
            "AVX2_E1",
            ("avx2", "fma", "avx_vnni"),
            "AVX2 with AVX-VNNI, no AVX-512: Intel Alder Lake, Raptor Lake, Sierra Forest",
        ),
        IsaLevel("avx2", 2, "avx2", "AVX2", "AVX2", ("avx2", "fma"), "AVX2 only: AMD Zen 1-3, Intel Haswell-Broadwell"),
        IsaLevel("scalar", 1, "default", "SSE41", "SSE4_2", ("sse4_1",), "ATen's default kernels, SSE4.1"),
    )
}
#: every name the ``isa`` axis takes, widest first (native: the machine as it is)
ISA_NAMES = (NATIVE, *LEVELS)
#: the switches a level sets (and native leaves as the environment has them)
KNOBS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")
#: the CPU flags that select kernels: recorded in every environment fingerprint
KERNEL_FLAGS = (
    "sse4_1",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512dq",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "amx_fp16",
)


class IsaError(HarnessError, ValueError):
    """An ISA name nothing here knows; the message names the value and lists the known ones."""


def check_name(name: str) -> str:
    if name not in ISA_NAMES:
        raise IsaError(f"unknown isa {name!r}; expected one of {', '.join(ISA_NAMES)}")
    return name


def cpu_flags() -> frozenset[str] | None:
    """The kernel-selecting flags of this CPU (Linux /proc/cpuinfo); None where unreadable."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return frozenset(f for f in KERNEL_FLAGS if f in have)
    except OSError:
        return None
    return None


# what a cap already in the environment allows (an operator emulating an older machine)
_ATEN_RANK = {"default": 1, "avx2": 3, "avx512": 6}
_ONEDNN_RANK = {
    "SSE41": 1,
    "AVX": 1,
    "AVX2": 2,
    "AVX2_VNNI": 3,
    "AVX2_VNNI_2": 3,
    "AVX512_CORE": 4,
    "AVX512_CORE_VNNI": 5,
    "AVX512_CORE_BF16": 6,
}
_MKL_RANK = {
    "SSE4_2": 1,
    "AVX": 1,
    "AVX2": 2,
    "AVX2_E1": 3,
    "AVX512": 4,
    "AVX512_E1": 5,
    "AVX512_E2": 5,
    "AVX512_E3": 6,
    "AVX512_E4": 6,
}


def environment_ceiling(environ: dict[str, str] | None = None) -> tuple[int, str] | None:
    """The widest level the environment's own caps allow, with the variable that caps it."""
    environ = os.environ if environ is None else environ
    caps = []
    for var, ranks in (
        ("ATEN_CPU_CAPABILITY", _ATEN_RANK),
        ("ONEDNN_MAX_CPU_ISA", _ONEDNN_RANK),
        ("MKL_ENABLE_INSTRUCTIONS", _MKL_RANK),
    ):
        value = environ.get(var)
        if value is None:
            continue
        key = value.lower() if var == "ATEN_CPU_CAPABILITY" else value.upper()
        if key in ranks:
            caps.append((ranks[key], f"{var}={value}"))
    return min(caps) if caps else None


def unavailable(
    name: str, flags: frozenset[str] | None = None, machine: str | None = None, environ: dict[str, str] | None = None
) -> str | None:
    """Why this machine cannot give the kernel level ``name`` (None when it can)."""
    check_name(name)
    if name == NATIVE:
        return None
    level = LEVELS[name]
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return f"isa {name} emulates an x86-64 CPU kind; this machine is {machine}"
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return f"isa {name}: this machine's CPU flags cannot be read (no /proc/cpuinfo)"
    missing = [f for f in level.needs if f not in flags]
    if missing:
        return f"isa {name} needs CPU flags {', '.join(missing)}, which this CPU lacks"
    ceiling = environment_ceiling(environ)
    if ceiling and ceiling[0] < level.rank:
        return f"isa {name} is wider than the environment allows ({ceiling[1]})"
    return None


def environment_for(name: str) -> dict[str, str]:
    """The variables a worker sets before torch starts for level ``name`` (none for native)."""
    check_name(name)
    if name == NATIVE:
        return {}
    level = LEVELS[name]
    return {"ATEN_CPU_CAPABILITY": level.aten, "ONEDNN_MAX_CPU_ISA": level.onednn, "MKL_ENABLE_INSTRUCTIONS": level.mkl}


#: the variable that names the level a process was started at (read back into its records)
LEVEL_VARIABLE = "HARNESS_ISA"


def child_environment(name: str) -> dict[str, str]:
    """What a child process needs to start at level ``name``: the caps and the level's name
    (nothing for native, which keeps the environment as it is)."""
    return {} if check_name(name) == NATIVE else {**environment_for(name), LEVEL_VARIABLE: name}


def apply(name: str) -> dict[str, str]:
    """Set level ``name``'s variables in this process (before torch is imported)."""
    values = environment_for(name)
    os.environ.update(values)
    os.environ[LEVEL_VARIABLE] = name
    return values


#: oneDNN's verbose ``isa:`` text -> a family name (the families its ISA caps select)
_ONEDNN_FAMILIES = (
    ("AMX", "amx"),
    ("AVX2 with Intel DL Boost, float16 and bfloat16", "avx2_vnni_2"),
    ("bfloat16", "avx512_bf16"),
    ("AVX10", "avx10"),
    ("AVX-512 with Intel DL Boost", "avx512_vnni"),
    ("AVX-512", "avx512"),
    ("AVX2 with Intel DL Boost", "avx2_vnni"),
    ("AVX2", "avx2"),
    ("AVX", "avx"),
    ("SSE4.1", "sse41"),
)


def onednn_family(isa_text: str | None) -> str | None:
    """``Intel AVX-512 with Intel DL Boost and bfloat16 support`` -> ``avx512_bf16``."""
    if not isa_text:
        return None
    for marker, family in _ONEDNN_FAMILIES:
        if marker in isa_text:
            return family
    return "other"


def kernel_class(aten: str | None, onednn: str | None) -> str:
    """The kernels in force, as one short name: ATen's capability + oneDNN's ISA family, e.g.
    ``aten-avx512/onednn-amx``. Two workers with other kernel classes are two environments."""
    return f"aten-{(aten or 'unknown').lower()}/onednn-{onednn_family(onednn) or 'unknown'}"
