"""File utilities every stored format shares: atomic writes and versioned JSON.

Why atomic: results are data users keep; a crash or a full disk must leave either the old
file or the new one, never half of each (write a temporary file beside the target, fsync,
rename, fsync the folder). Why versioned: every file carries a ``schema_version``; a newer
one is refused with a clear message, an older one is upgraded step by step through the
format's ``update_to_N`` functions (as asv does), and one without an upgrade path is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from harness.digests import strict_json_loads
from harness.errors import StoreError


def read_input_file(path: Path, limit: int, error: type[ValueError]) -> bytes:
    """A regular file's bytes, at most ``limit``: devices (/dev/zero) and FIFOs are refused
    before they are read, so hostile paths can neither exhaust memory nor block forever (opened
    non-blocking, then checked on the open descriptor, so nothing can be swapped in between)."""
    import stat

    if "\0" in str(path):
        raise error(f"{str(path)!r}: cannot read (a path cannot hold a NUL byte)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "Is a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise error(f"{path}: cannot read ({kind})")
        if info.st_size > limit:
            raise error(f"{path}: $: file is too large; the limit is {limit} bytes")
        with os.fdopen(fd, "rb", buffering=0) as fh:
            fd = -1
            chunks: list[bytes] = []  # read(limit + 1) allocates the whole limit even for a small file
            total = 0
            while total <= limit:
                chunk = fh.read(min(1 << 20, limit + 1 - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
            raw = b"".join(chunks)
    except OSError as err:
        raise error(f"{path}: cannot read ({err.strerror or err})") from None
    finally:
        if fd >= 0:
            os.close(fd)
    if len(raw) > limit:
        raise error(f"{path}: $: file is too large; the limit is {limit} bytes")
    return raw


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A binary handle on a temporary file beside ``path``; when the block ends normally it is
    fsynced, given the usual permissions (mkstemp makes 0600) and renamed over ``path``; when
    it raises, the temporary file is removed and ``path`` is untouched. A target that exists
    and is not a regular file (a device such as /dev/null, a FIFO, a folder, a link) is
    refused before anything is written: renaming over it would replace it."""
    from harness.store.safe_output import UnsafeOutput, check_output_target

    path = Path(path)
    try:
        check_output_target(path)
    except UnsafeOutput as err:
        raise StoreError(str(err)) from None
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    with atomic_output(path) as fh:
        fh.write(data)


def atomic_write_json(path: Path, obj: Any) -> None:
    """Indented, sorted, no NaN: the stored files diff cleanly and any JSON reader reads them."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def read_json_file(path: Path, what: str) -> Any:
    from harness.store.safe_output import UnsafeOutput, open_regular_for_read

    try:
        with open_regular_for_read(path, what) as fh:
            return strict_json_loads(fh.read())
    except UnsafeOutput as err:
        raise StoreError(str(err)) from None
    except FileNotFoundError:
        raise StoreError(f"{path}: {what} not found") from None
    except ValueError as err:  # not JSON, or not one value (a duplicate key, NaN)
        raise StoreError(f"{path}: {what} is not valid JSON ({err})") from None


def check_version(found: Any, supported: int, where: str) -> int:
    """``found`` when it is a version this harness reads (a positive integer, not newer)."""
    if not isinstance(found, int) or isinstance(found, bool) or found < 1:
        raise StoreError(f"{where}: schema_version is missing or not a positive integer (got {found!r})")
    if found > supported:
        raise StoreError(
            f"{where}: schema_version {found} is newer than this harness supports ({supported}); "
            f"upgrade consensus-harness to read it"
        )
    return found


def upgrade(
    doc: dict[str, Any], supported: int, upgrades: Mapping[int, Callable[[dict[str, Any]], dict[str, Any]]], where: str
) -> dict[str, Any]:
    """``doc`` brought to version ``supported``: a newer version is refused, an older one goes
    through ``upgrades[n]`` (asv's ``update_to_n``: version n-1 -> n) one version at a time."""
    found = check_version(doc.get("schema_version"), supported, where)
    while found < supported:
        step = upgrades.get(found + 1)
        if step is None:
            raise StoreError(
                f"{where}: schema_version {found} is older than this harness reads ({supported}) and "
                f"there is no upgrade from it"
            )
        doc = {**step(dict(doc)), "schema_version": found + 1}
        found += 1
    return doc
