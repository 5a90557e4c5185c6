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

from pathlib import Path

from harness.digests import sha256_file
from harness.errors import HarnessError

STANDIN_ROOT = Path(__file__).parent / "standins"

# name -> {file -> sha256}; printed by `python scripts/train_standins.py pin` after training.
PINNED: dict[str, dict[str, str]] = {
    "gpt2": {
        "config.json": "daaf86091e628349d52b78d4cded660a4c7fe30bd8ccc7035d7a086f3981f04c",
        "generation_config.json": "81fb6b7a7c241436006bd433a067f24f7d7b3cf7a0208eca55227432ea842492",
        "model.safetensors": "5fd0278b5c4cf19e4849958ee065b39ab3642c28a78c106a512e8daaa1492365",
        "tokenizer.json": "b389a53af43039a780d52281092293743aab4d68263f840c6ad666d4f24be20b",
        "tokenizer_config.json": "874e76c570b46c46fffd58092edb954163e2f30af61d6e38065a3020b2b2f2c7",
    },
    "musicgen": {
        "config.json": "3d3edb449ec8ac33d098dc231054c17d4600449eba8a9129aa0e51c7f4929202",
        "generation_config.json": "53b0d1de36b7924a3e5cfd9ea4efea3a344fcc0ace25619f065b6485b72fa529",
        "model.safetensors": "2adbb3186f2108dc3b8bd0e4df083f706c23caef0acac9e8b09008f516309cfc",
        "processor_config.json": "97451103fa9291374720f5a1e20326b5bced16c216290b13507c272d9edc8b96",
        "tokenizer.json": "e9f5bd0b0a5586949f6dce2e407699a79c3f203f9b447e88572fe91c3568fd3a",
        "tokenizer_config.json": "1b212e9ddd2315a812067bb60f1891c34ad97b98579fea34a7a903f878381c21",
    },
}

STANDIN_NAMES = tuple(sorted(PINNED))


class StandinCorrupted(HarnessError, RuntimeError):
    """A shipped stand-in file is missing or no longer hashes to its pinned digest."""


def folder_digests(folder: Path) -> dict[str, str]:
    """sha256 of every file in a stand-in folder, by relative path (what ``PINNED`` holds)."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


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
        got = sha256_file(path)
        if got != want:
            raise StandinCorrupted(
                f"{path}: sha256 {got[:16]}... is not the pinned {want[:16]}... (the shipped stand-in was changed; "
                f"reinstall the harness)"
            )
    _CHECKED.add(key)
    return folder


__all__ = ["PINNED", "STANDIN_NAMES", "STANDIN_ROOT", "StandinCorrupted", "folder_digests", "standin_dir"]
