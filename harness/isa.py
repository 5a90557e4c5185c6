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

``below-native`` names a level relative to the machine that runs it: the widest level whose
ATen kernels are narrower than native's (AVX2 on an AVX-512 CPU, scalar on an AVX2-only one),
so one matrix compares two real CPU kinds on any machine. A fixed level such as ``avx2`` is
native's own kernels on an AVX2-only CPU: a comparison of a kernel class with itself, which
the analysis reports as not a comparison. Resolved where the cell runs (``resolve``); the
record keeps the relative name in its axes and the level it resolved to in
``determinism.kernels.isa``.
This module is a leaf: it reads /proc/cpuinfo and the environment, never imports torch.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass

from harness.errors import HarnessError

NATIVE = "native"
BELOW_NATIVE = "below-native"


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
#: every fixed kernel level, widest first (native: the machine as it is)
ISA_NAMES = (NATIVE, *LEVELS)
#: levels named relative to the machine that runs the cell, and what each resolves to
RELATIVE_LEVELS = {
    BELOW_NATIVE: "the widest level whose ATen kernels are narrower than native's on the machine that runs it",
}
#: every name the ``isa`` axis (and ``--isa``) takes: the fixed levels, then the relative ones
ISA_CHOICES = (*ISA_NAMES, *RELATIVE_LEVELS)
#: ATen's dispatch capabilities, narrowest first (``ATEN_CPU_CAPABILITY`` values)
ATEN_ORDER = ("default", "avx2", "avx512")
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
    if name not in ISA_CHOICES:
        raise IsaError(f"unknown isa {name!r}; expected one of {', '.join(ISA_CHOICES)}")
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


def environment_ceiling(environ: Mapping[str, str] | None = None) -> tuple[int, str] | None:
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


def _not_x86(name: str, machine: str | None) -> str | None:
    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return f"isa {name} emulates an x86-64 CPU kind; this machine is {machine}"
    return None


def native_aten(flags: frozenset[str] | None = None, environ: Mapping[str, str] | None = None) -> str:
    """ATen's capability at native on this machine, as torch picks it: the widest the CPU has
    (AVX-512 needs F, BW, VL, DQ and FMA; AVX2 needs FMA), lowered by an ``ATEN_CPU_CAPABILITY``
    in the environment. A prediction from the flags: the records' read-back kernels are the truth."""
    flags = (cpu_flags() or frozenset()) if flags is None else flags
    if set(_AVX512) | {"fma"} <= flags:
        cpu = "avx512"
    elif {"avx2", "fma"} <= flags:
        cpu = "avx2"
    else:
        cpu = "default"
    environ = os.environ if environ is None else environ
    asked = str(environ.get("ATEN_CPU_CAPABILITY", "")).lower()
    if asked in ATEN_ORDER and ATEN_ORDER.index(asked) < ATEN_ORDER.index(cpu):
        return asked
    return cpu


def resolve(
    name: str, flags: frozenset[str] | None = None, machine: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The fixed level ``name`` stands for on this machine: itself for a fixed level; for
    ``below-native`` the widest level this machine gives whose ATen kernels are narrower than
    native's (None when there is none)."""
    check_name(name)
    if name not in RELATIVE_LEVELS:
        return name
    if _not_x86(name, machine):
        return None
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return None
    native = ATEN_ORDER.index(native_aten(flags, environ))
    return next(
        (
            level.name
            for level in LEVELS.values()
            if ATEN_ORDER.index(level.aten) < native and unavailable(level.name, flags, machine, environ) is None
        ),
        None,
    )


def unavailable(
    name: str, flags: frozenset[str] | None = None, machine: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """Why this machine cannot give the kernel level ``name`` (None when it can)."""
    check_name(name)
    if name == NATIVE:
        return None
    why = _not_x86(name, machine)
    if why:
        return why
    flags = cpu_flags() if flags is None else flags
    if flags is None:
        return f"isa {name}: this machine's CPU flags cannot be read (no /proc/cpuinfo)"
    if name in RELATIVE_LEVELS:
        if resolve(name, flags, machine, environ) is not None:
            return None
        aten = native_aten(flags, environ)
        return f"isa {name}: no kernel level here runs narrower ATen kernels than native's ({aten})"
    level = LEVELS[name]
    missing = [f for f in level.needs if f not in flags]
    if missing:
        return f"isa {name} needs CPU flags {', '.join(missing)}, which this CPU lacks"
    ceiling = environment_ceiling(environ)
    if ceiling and ceiling[0] < level.rank:
        return f"isa {name} is wider than the environment allows ({ceiling[1]})"
    return None


def concrete(name: str) -> str:
    """``name`` as a fixed level on this machine (a relative level resolved); a relative level
    with nothing to resolve to here is refused with the reason."""
    fixed = resolve(name)
    if fixed is None:
        raise IsaError(unavailable(name) or f"isa {name}: nothing to resolve to here")
    return fixed


def environment_for(name: str) -> dict[str, str]:
    """The variables a worker sets before torch starts for level ``name`` (none for native; a
    relative level is resolved on this machine first)."""
    name = concrete(name)
    if name == NATIVE:
        return {}
    level = LEVELS[name]
    return {"ATEN_CPU_CAPABILITY": level.aten, "ONEDNN_MAX_CPU_ISA": level.onednn, "MKL_ENABLE_INSTRUCTIONS": level.mkl}


#: the variable that names the level a process was started at (read back into its records)
LEVEL_VARIABLE = "HARNESS_ISA"


def apply(name: str) -> dict[str, str]:
    """Set level ``name``'s variables in this process (before torch is imported); a relative
    level is resolved from the environment as it is before any cap is set."""
    name = concrete(name)
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
