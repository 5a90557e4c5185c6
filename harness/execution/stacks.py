"""Software stacks, made ready to start workers under: built, cached, probed.

A ``pip`` stack is an *overlay*: only the packages that differ from the current environment,
installed with ``pip install --target DIR --no-deps`` and put in front of it on the worker's
``PYTHONPATH``. Why an overlay and not a venv: a full venv with torch is about 1.6 GB and
takes minutes to build, where ``transformers==5.24.0`` on top of this one is 60 MB and a few
seconds. Why it is robust: pip's own resolver decides what differs (``pip install --dry-run
--report`` against the current environment lists exactly the packages it would install,
dependencies included, and leaves every satisfied one alone), and the overlay holds exactly
those, pinned, so overlay + current environment is the environment pip would have made.

Built overlays are cached under the harness's home folder (``$CONSENSUS_HARNESS_HOME/stacks``)
keyed by what they contain (each package's name, version and archive digest, the Python
version and platform); a request (requirements + the installed distributions) is remembered
too, so a second run starts without asking pip or the network.

A stack that cannot be built is a problem line (pip's ``ERROR:`` line), and its cells are
skipped with it; a stack whose workers would import another harness build (a ``python``
stack with its own install, an overlay holding a ``harness`` package) is refused with the
same check a Ray node makes (harness.execution.env.code_refusal): its cells are not run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from harness.digests import digest_json
from harness.execution.env import code_digest, code_refusal
from harness.spec.stacks import StackSpec
from harness.store.files import atomic_write_json
from harness.vocabulary import CURRENT_STACK

STACKS_LAYOUT = 1  # bump when an overlay's layout changes: old ones are rebuilt
PIP_TIMEOUT_S = 900.0
PROBE_TIMEOUT_S = 120.0
#: what the probe prints: the harness code digest and library versions seen under the stack
_PROBE = (
    "import json, sys\n"
    "from importlib import metadata\n"
    "from harness.execution.env import LIBRARIES, code_digest\n"
    "def v(n):\n"
    "    try:\n"
    "        return metadata.version(n)\n"
    "    except metadata.PackageNotFoundError:\n"
    "        return None\n"
    "print(json.dumps({'code': code_digest(), 'python': sys.version.split()[0],"
    " 'libraries': {n: v(n) for n in LIBRARIES}}))\n"
)


@dataclass(frozen=True)
class PreparedStack:
    """A stack ready to start workers under, or why it cannot be."""

    name: str
    source: str  # current | pip | python | overlay
    python: str
    path: tuple[str, ...] = ()  # folders put in front of PYTHONPATH
    key: str | None = None  # a pip overlay's cache key (what it contains)
    packages: dict[str, str] = field(default_factory=dict)  # what the overlay installs: name -> version
    libraries: dict[str, str | None] = field(default_factory=dict)  # versions the probe saw
    problem: str | None = None  # cannot be built or started: its cells are skipped with it
    refusal: str | None = None  # another harness build: its cells are refused, not run

    def environ(self, env: dict[str, str]) -> dict[str, str]:
        """``env`` with this stack's folders in front of ``PYTHONPATH``."""
        return with_path(env, self.path)

    def describe(self) -> dict[str, Any]:
        """What the manifest's ``stacks`` entry records."""
        return {
            "source": self.source,
            "python": self.python,
            "path": list(self.path),
            "key": self.key,
            "packages": self.packages,
            "libraries": self.libraries,
            "problem": self.problem,
            "refusal": self.refusal,
        }


def with_path(env: dict[str, str], path: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``env`` with ``path`` in front of its ``PYTHONPATH`` (a stack's overlay shadows
    every package of the environment under it, the harness's own folder included)."""
    if not path:
        return env
    rest = env.get("PYTHONPATH")
    return {**env, "PYTHONPATH": os.pathsep.join([*path, *([rest] if rest else [])])}


def stacks_home() -> Path:
    from harness.models.tiny import cache_root

    return cache_root() / "stacks"


def current_stack() -> PreparedStack:
    return PreparedStack(CURRENT_STACK, CURRENT_STACK, sys.executable)


def prepare_stacks(specs: dict[str, StackSpec], names: set[str], base: Path) -> dict[str, PreparedStack]:
    """Every stack in ``names`` made ready (``current`` always); relative paths are the matrix's."""
    out = {CURRENT_STACK: current_stack()}
    here = code_digest()
    for name in sorted(names - {CURRENT_STACK}):
        out[name] = probed(prepare(name, specs[name], base), here)
    return out


def prepare(name: str, spec: StackSpec, base: Path) -> PreparedStack:
    """The stack as it will start (built when a pip overlay is missing), not yet probed."""
    if spec.python is not None:
        python = Path(spec.python).expanduser()
        python = python if python.is_absolute() else base / python
        if not (python.is_file() and os.access(python, os.X_OK)):
            return PreparedStack(name, "python", str(python), problem=f"stack {name}: no interpreter at {python}")
        return PreparedStack(name, "python", str(python))
    if spec.overlay is not None:
        folder = Path(spec.overlay).expanduser()
        folder = folder if folder.is_absolute() else base / folder
        if not folder.is_dir():
            return PreparedStack(
                name, "overlay", sys.executable, problem=f"stack {name}: overlay {folder} is not a folder"
            )
        return PreparedStack(name, "overlay", sys.executable, (str(folder.resolve()),))
    return build_pip(name, spec.pip or [])


def probed(stack: PreparedStack, driver_code: str) -> PreparedStack:
    """The stack with the library versions its interpreter sees, refused when the harness
    code it imports is not the driver's (the check a Ray node makes)."""
    if stack.problem:
        return stack
    try:
        proc = subprocess.run(
            [stack.python, "-c", _PROBE],
            env=stack.environ(dict(os.environ)),
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return _with(stack, problem=f"stack {stack.name}: its interpreter does not start ({type(err).__name__})")
    if proc.returncode != 0:
        last = _last_line(proc.stderr)
        hint = " (install this harness in that environment)" if "No module named 'harness" in proc.stderr else ""
        return _with(stack, problem=f"stack {stack.name}: its interpreter cannot run the harness: {last}{hint}")
    try:
        seen = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return _with(stack, problem=f"stack {stack.name}: the probe printed no answer")
    libraries = {"python": seen.get("python"), **(seen.get("libraries") or {})}
    refusal = code_refusal(driver_code, seen.get("code"), f"stack {stack.name}")
    return _with(stack, libraries=libraries, refusal=refusal)


def _with(stack: PreparedStack, **changes: Any) -> PreparedStack:
    from dataclasses import replace

    return replace(stack, **changes)


# --- pip overlays -------------------------------------------------------------------------------
def installed() -> list[tuple[str, str]]:
    """(name, version) of every distribution the current interpreter sees, sorted."""
    found = {(d.metadata["Name"] or "", d.version) for d in metadata.distributions()}
    return sorted(found)


def request_key(requirements: list[str]) -> str:
    """What a pip stack's overlay depends on: the requirements and the environment under it."""
    return digest_json(
        {
            "layout": STACKS_LAYOUT,
            "requirements": sorted(requirements),
            "python": sys.version,
            "platform": sysconfig.get_platform(),
            "installed": installed(),
            # pip's own settings (an index, constraints) change what it resolves to
            "pip": {k: v for k, v in sorted(os.environ.items()) if k.startswith("PIP_")},
        }
    )


def build_pip(name: str, requirements: list[str], home: Path | None = None) -> PreparedStack:
    """The overlay of ``requirements`` on top of this environment, from the cache or built."""
    home = home or stacks_home()
    remembered = home / "requests" / f"{request_key(requirements)[:24]}.json"
    plan = _remembered(remembered, home)
    if plan is None:
        plan, problem = resolve(requirements)
        if problem:
            return PreparedStack(name, "pip", sys.executable, problem=f"stack {name}: {problem}")
        assert plan is not None
    key = overlay_key(plan)
    pins = [f"{p['name']}=={p['version']}" for p in plan]
    packages = {p["name"]: p["version"] for p in plan}
    if not plan:  # every requirement is already satisfied: the stack is the current environment
        _remember(remembered, plan)
        return PreparedStack(name, "pip", sys.executable, key=key)
    folder = home / key[:24]
    if not (folder / "stack.json").is_file():
        problem = install_overlay(folder, pins, packages, key)
        if problem:
            return PreparedStack(
                name, "pip", sys.executable, key=key, packages=packages, problem=f"stack {name}: {problem}"
            )
    _remember(remembered, plan)
    return PreparedStack(name, "pip", sys.executable, (str(folder),), key=key, packages=packages)


def resolve(requirements: list[str]) -> tuple[list[dict[str, str]] | None, str | None]:
    """What pip would install into the current environment for ``requirements`` (its
    resolver, its indexes and constraints), or pip's reason in one line."""
    with tempfile.TemporaryDirectory(prefix="harness-stack-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--no-input", "--report", str(report)]
        problem = _pip([*cmd, *requirements])
        if problem:
            return None, problem
        doc = json.loads(report.read_text())
    plan = []
    for item in doc.get("install") or []:
        meta = item.get("metadata") or {}
        info = item.get("download_info") or {}
        digest = ((info.get("archive_info") or {}).get("hashes") or {}).get("sha256") or info.get("url")
        plan.append({"name": str(meta.get("name")), "version": str(meta.get("version")), "archive": str(digest)})
    if any(p["name"].lower().replace("_", "-") == "consensus-harness" for p in plan):
        return None, "these requirements would replace the harness itself"
    return sorted(plan, key=lambda p: p["name"].lower()), None


def overlay_key(plan: list[dict[str, str]]) -> str:
    """An overlay's identity: what it contains, for this Python and platform."""
    return digest_json(
        {"layout": STACKS_LAYOUT, "python": sys.version_info[:2], "platform": sysconfig.get_platform(), "plan": plan}
    )


def install_overlay(folder: Path, pins: list[str], packages: dict[str, str], key: str) -> str | None:
    """Install ``pins`` (no dependencies: the plan already holds every one that changes) into
    a new folder, then move it into place; pip's reason in one line when it cannot."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=folder.parent))
    try:
        cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--no-input", "--no-deps", "--no-compile"]
        problem = _pip([*cmd, "--target", str(tmp), *pins])
        if problem:
            return problem
        atomic_write_json(tmp / "stack.json", {"layout": STACKS_LAYOUT, "key": key, "packages": packages})
        if folder.is_dir() and not (folder / "stack.json").is_file():  # left incomplete by hand: rebuilt
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(tmp, folder)
        except OSError:  # another run built it meanwhile: theirs is the same content
            if not (folder / "stack.json").is_file():
                raise
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pip(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"pip did not finish in {PIP_TIMEOUT_S:.0f} s"
    except OSError as err:
        return f"pip could not start ({err})"
    if proc.returncode == 0:
        return None
    errors = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip().startswith("ERROR:")]
    return (errors[0] if errors else f"pip exited with code {proc.returncode}: {_last_line(proc.stderr)}")[:400]


def _remembered(path: Path, home: Path) -> list[dict[str, str]] | None:
    """A request's plan from an earlier run, when its overlay is still complete."""
    try:
        plan = json.loads(path.read_text())["plan"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if plan and not (home / overlay_key(plan)[:24] / "stack.json").is_file():
        return None
    return plan if isinstance(plan, list) else None


def _remember(path: Path, plan: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"layout": STACKS_LAYOUT, "plan": plan})


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:300]
