"""Where the harness may write and read: one check for every output path and run-directory file.

Why one helper: writing a temporary file and renaming it over ``--out /dev/null`` replaces a
device node with a regular file (as root, for every user of the machine); a ``results.jsonl``
or ``artifacts/`` that is a symbolic link makes a run write (and ``--resume`` truncate)
outside its directory, and makes ``bundle`` pack a file it does not own. So:

- ``check_output_target`` refuses an existing target that is not a regular file (device,
  FIFO, socket, directory) or that is a symbolic link, before anything is written;
- ``open_in_run`` opens a run-directory file with ``O_NOFOLLOW`` and checks every folder
  between the run directory and the file is a real folder, never a link; a FIFO is refused
  without blocking (``O_NONBLOCK`` then ``fstat``), so nothing hangs on a special file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from harness.errors import HarnessError


class UnsafeOutput(HarnessError, RuntimeError):
    """A path the harness refuses to write or read; the message names it and why."""


def _kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symbolic link"),
    ):
        if test(mode):
            return name
    return "special file"


def check_output_target(path: str | Path) -> Path:
    """``path`` if writing it by rename is safe: absent, or an existing regular file that is
    not a symbolic link; its folder must not be a special file either."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as err:
        raise UnsafeOutput(f"{path}: cannot write here ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeOutput(f"{path}: refusing to write over a {_kind(st.st_mode)}; give a regular file path")
    return path


def check_run_path(run_dir: str | Path, rel: str) -> Path:
    """``run_dir/rel`` after checking no component below ``run_dir`` is a symbolic link or
    leaves the run directory; the last component may be absent."""
    run_dir = Path(run_dir)
    parts = Path(rel).parts
    if not parts or Path(rel).is_absolute() or ".." in parts:
        raise UnsafeOutput(f"{rel}: path leaves the run directory {run_dir}")
    current = run_dir
    for i, part in enumerate(parts):
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return run_dir.joinpath(*parts)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafeOutput(
                f"{current}: is a symbolic link inside the run directory; refused (a run never "
                f"follows links out of its folder)"
            )
        last = i == len(parts) - 1
        if not last and not stat.S_ISDIR(st.st_mode):
            raise UnsafeOutput(f"{current}: expected a folder, found a {_kind(st.st_mode)}")
        if last and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            raise UnsafeOutput(f"{current}: is a {_kind(st.st_mode)}, not a regular file; refused")
    return current


def open_in_run(run_dir: str | Path, rel: str, mode: str = "rb") -> Any:
    """Open ``run_dir/rel`` without following links and without blocking on a FIFO.
    ``mode`` is one of rb, ab, rb+, a (text, UTF-8)."""
    path = check_run_path(run_dir, rel)
    flags = {
        "rb": os.O_RDONLY,
        "rb+": os.O_RDWR,
        "ab": os.O_WRONLY | os.O_APPEND | os.O_CREAT,
        "a": os.O_WRONLY | os.O_APPEND | os.O_CREAT,
    }[mode]
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as err:
        if err.errno == 40:  # ELOOP: the last component became a link after the check
            raise UnsafeOutput(f"{path}: is a symbolic link inside the run directory; refused") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeOutput(f"{path}: is a {_kind(st.st_mode)}, not a regular file; refused")
    os.set_blocking(fd, True)
    if mode == "a":
        return os.fdopen(fd, "a", encoding="utf-8")
    return os.fdopen(fd, mode)


def open_regular_for_read(path: str | Path, what: str = "file") -> Any:
    """Open a user-given input file for reading, refusing FIFOs, devices and folders
    without blocking (reading a FIFO would wait forever for a writer)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {what} not found") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UnsafeOutput(f"{path}: {what} is a {_kind(st.st_mode)}, not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")
