"""The CPU kernels' read-back (oneMKL's code path, oneDNN's ISA), once per machine, library
build and kernel switches.

Why a memo: oneMKL reports the code path it dispatches to only in its verbose banner, and to
print that banner it first measures the CPU clock: about 0.4 s of every worker start (of
about 2.9 s on a 2-core machine), paid again by every worker for the same answer; oneDNN's
``isa:`` line needs a convolution run (its JIT and the OpenMP pool: about 0.1 s more). The answer
is a function of the oneMKL build (statically linked into torch's CPU library), the CPU and
the switches oneMKL and its neighbours read when they start (``MKL_*``, ``ONEDNN_*``,
``DNNL_*``, ``ATEN_CPU_CAPABILITY``): the key names all of them, so another machine, another
torch, another kernel level or another cap reads the banner afresh. The read-back itself is
unchanged: it still runs in a worker whose environment was set before torch started, the
first time each key is seen. ``CONSENSUS_HARNESS_KERNEL_CACHE=0`` reads it every time.

The memo lives beside the tiny models (``$CONSENSUS_HARNESS_HOME`` or
``~/.cache/consensus-harness``), one small versioned JSON file per key, written atomically.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
SWITCH_PREFIXES = ("MKL_", "ONEDNN_", "DNNL_", "ATEN_")
OFF_VARIABLE = "CONSENSUS_HARNESS_KERNEL_CACHE"


def _cpu_identity() -> dict[str, str]:
    """The CPU's model name and its whole flag list (any flag may steer a dispatcher)."""
    out = {"machine": platform.machine()}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                for field in ("model name", "flags", "Features"):
                    if line.startswith(field) and field not in out:
                        out[field] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return out


def _library_identity(torch: Any) -> dict[str, Any]:
    """Which build of torch's CPU library (oneMKL is linked into it): path, size, mtime."""
    lib = Path(torch.__file__).resolve().parent / "lib"
    found = sorted(lib.glob("libtorch_cpu.*")) or [Path(torch.__file__).resolve()]
    st = found[0].stat()
    return {"torch": torch.__version__, "file": str(found[0]), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def cache_key(torch: Any, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Everything the banner depends on (see the module docstring)."""
    environ = dict(os.environ) if environ is None else environ
    switches = {k: v for k, v in sorted(environ.items()) if k.startswith(SWITCH_PREFIXES)}
    switches.pop("MKL_VERBOSE", None)  # the probe's own switch, not the code path's
    return {"cpu": _cpu_identity(), "library": _library_identity(torch), "switches": switches}


def cache_path(key: dict[str, Any]) -> Path:
    from harness.digests import digest_json
    from harness.models.tiny import cache_root

    return cache_root() / "kernels" / f"{digest_json(key)[:24]}.json"


def remembered(key: dict[str, Any], name: str, read: Callable[[], str | None]) -> str | None:
    """The value ``read`` returns for (``key``, ``name``), read once and then recalled from
    the memo. A missing, unreadable or foreign memo file is read afresh and rewritten; None
    (no banner) is never remembered, so a failed read-back is retried next time."""
    if os.environ.get(OFF_VARIABLE) == "0":
        return read()
    path = cache_path(key)
    values: dict[str, Any] = {}
    try:
        from harness.store.files import read_json_file

        doc = read_json_file(path, "kernel read-back memo")
        if isinstance(doc, dict) and doc.get("schema_version") == SCHEMA_VERSION and doc.get("key") == key:
            values = dict(doc.get("values") or {})
            if isinstance(values.get(name), str):
                return str(values[name])
    except Exception:  # absent, unreadable or written by another version: read it again
        values = {}
    value = read()
    if value is not None:
        try:
            from harness.store.files import atomic_write_json

            path.parent.mkdir(parents=True, exist_ok=True)
            doc = {"schema_version": SCHEMA_VERSION, "key": key, "values": {**values, name: value}}
            atomic_write_json(path, doc)
        except OSError:  # a read-only home: the worker still has its answer
            pass
    return value
