"""The trained stand-ins: small MusicGen and GPT-2 checkpoints shipped as package data.

Why: a random-weight model gives near-uniform next-token distributions, so every rate measured
on the tiny models says little about a trained model, whose distributions are peaked. No real
checkpoint can reach this machine or CI, so two small ones were trained here once
(``scripts/train_standins.py``; provenance and measured figures in docs/standins.md) and their
files are the model: training is not bitwise across CPUs, so they are never rebuilt.

Each stand-in is a plain folder read by ``from_pretrained`` (the path a Hugging Face cache
snapshot takes), named in a task as ``standin:<name>``. Every file's sha256 is pinned here and
checked before the folder is handed out: a changed or missing file is one clear error.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from harness.errors import HarnessError

STANDIN_ROOT = Path(__file__).parent / "standins"

# name -> {file -> sha256}; printed by `python scripts/train_standins.py pin` after training.
PINNED: dict[str, dict[str, str]] = {}

STANDIN_NAMES = tuple(sorted(PINNED))


class StandinCorrupted(HarnessError, RuntimeError):
    """A shipped stand-in file is missing or no longer hashes to its pinned digest."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def folder_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file in a stand-in folder, by relative path (what ``PINNED`` holds)."""
    return {p.relative_to(folder).as_posix(): file_sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


_CHECKED: set[str] = set()


def standin_dir(name: str, root: Path = STANDIN_ROOT) -> Path:
    """The stand-in's folder after its files match their pinned digests (checked once per process)."""
    if name not in PINNED:
        raise KeyError(name)
    folder = root / name
    key = str(folder)
    if key in _CHECKED:
        return folder
    for rel, want in sorted(PINNED[name].items()):
        path = folder / rel
        if not path.is_file():
            raise StandinCorrupted(f"{path}: stand-in file missing (reinstall the harness)")
        got = file_sha256(path)
        if got != want:
            raise StandinCorrupted(
                f"{path}: sha256 {got[:16]}... is not the pinned {want[:16]}... (the shipped stand-in was changed; "
                f"reinstall the harness)"
            )
    _CHECKED.add(key)
    return folder


__all__ = ["PINNED", "STANDIN_NAMES", "STANDIN_ROOT", "StandinCorrupted", "folder_digests", "standin_dir"]
