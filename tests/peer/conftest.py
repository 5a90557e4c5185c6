"""The network's reference runners as peers: found, copied, patched and importable.

Where they are: ``HARNESS_REFERENCE_RUNNERS`` when set, else ``shared/reference/runners`` beside
the repository (``<repo>/../shared``), else beside the main checkout of a git worktree (the
parent of git's common directory). The tests skip only when none of these exists.

Each session copies both runners into a temporary folder, applies ``patches/*.diff`` there
(``patch -p1``; the originals are never touched), and puts their ``src/`` folders on
``sys.path``. The runners read ``config.yml`` / ``.env`` from the current directory, so their
calls run in an empty temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNNERS = ("audio-task", "gpt-task")


def _git_common_parent(repo: Path) -> Path | None:
    """The folder holding the main checkout when ``repo`` is a git worktree (``.git`` is a file)."""
    dot_git = repo / ".git"
    if not dot_git.is_file():
        return None
    text = dot_git.read_text().strip()
    if not text.startswith("gitdir:"):
        return None
    gitdir = (repo / text.split(":", 1)[1].strip()).resolve()
    common = gitdir
    if (gitdir / "commondir").exists():
        common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
    return common.parent


def reference_runners() -> Path | None:
    """The first existing candidate folder of the reference runners (None when absent)."""
    explicit = os.environ.get("HARNESS_REFERENCE_RUNNERS")
    if explicit:
        return Path(explicit) if Path(explicit).is_dir() else None
    candidates = [REPO.parent / "shared" / "reference" / "runners"]
    main = _git_common_parent(REPO)
    if main is not None:
        candidates.append(main.parent / "shared" / "reference" / "runners")
    return next((c for c in candidates if all((c / r / "src").is_dir() for r in RUNNERS)), None)


@pytest.fixture(scope="session")
def runners_source() -> Path:
    found = reference_runners()
    if found is None:
        pytest.skip(
            "the network's reference runners are not here (set HARNESS_REFERENCE_RUNNERS or put "
            "shared/reference/runners beside the repository)"
        )
    return found


@pytest.fixture(scope="session")
def patched_runners(runners_source, tmp_path_factory) -> dict[str, Path]:
    """Patched copies of both runners; their ``src/`` folders on sys.path for the session."""
    root = tmp_path_factory.mktemp("runners")
    srcs = {}
    for name in RUNNERS:
        shutil.copytree(runners_source / name, root / name)
        for path in (root / name).rglob("*"):
            path.chmod(path.stat().st_mode | 0o200)
        srcs[name] = root / name / "src"
    for diff in sorted((runners_source / "patches").glob("*.diff")):
        target = next(name for name in RUNNERS if diff.name.startswith(name))
        done = subprocess.run(
            ["patch", "-p1", "-d", str(root / target), "-i", str(diff)], capture_output=True, text=True
        )
        assert done.returncode == 0, f"{diff.name} does not apply: {done.stdout}{done.stderr}"
    for src in srcs.values():
        sys.path.insert(0, str(src))
    yield srcs
    for src in srcs.values():
        sys.path.remove(str(src))


@pytest.fixture
def runner_cwd(tmp_path, monkeypatch) -> Path:
    """An empty working folder: no config.yml or .env of anyone else reaches the runners."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def standin_musicgen() -> Path:
    from harness.models.loading import resolve_model

    return Path(resolve_model("standin:musicgen").path)


@pytest.fixture(scope="session")
def standin_gpt2() -> Path:
    from harness.models.loading import resolve_model

    return Path(resolve_model("standin:gpt2").path)


PEER_THREADS = 1


@pytest.fixture(autouse=True)
def pinned_threads():
    """Both sides run with one torch thread. The pytest process keeps whatever thread count an
    earlier test left (a harness call with threads=1 sets it process-wide), and the thread count
    changes MusicGen's floats; the CLI cases pass ``--threads 1`` to match."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(PEER_THREADS)
    yield PEER_THREADS
    torch.set_num_threads(before)
