"""The package layout follows the flow: no import circles, no stage importing a later one.

The stages, lowest first (docs/architecture.md):

  leaves     errors, digests, outputs, determinism, hubenv, isa: used everywhere, import nothing of ours
  store      files, records, manifest, run directories, bundles: the formats on disk; knows no
             task or engine (the matrix's cell axes and the runner's records are stored here,
             written by execution's driver, read by everything after it)
  models     tiny seeded models and loading from the local cache
  spec       task kinds (registry), tasks, lint, schemas, matrices, policy (thresholds, gates)
  engines    one file per kind: load a model and run one task
  execution  execute one task, the worker process, the protocol, the runner
  compare    comparison levels, agreement, fingerprints, validators
  analysis   a run's verdicts, costs, cross-run comparison, benchmarks statistics
  report     Markdown, JSON, HTML
  workflows  certify, validator study
  cli        argument parsing and exit codes
  api        harness.api: the public Python API (run, analyse, compare, certify, assert)

``harness/__init__.py`` holds the version (a leaf) and names the public API by lazy
``"harness.api:name"`` strings: it is a registry, so nothing that imports ``harness`` for its
version imports the API.
Every import counts, at module level, inside a function (a lazy import is still a
dependency) or under ``if TYPE_CHECKING:`` (an annotation naming a later stage's type is a
dependency on it too: the certificate's model used to sit above its renderer that way).

The registries' lazy ``"harness.module:object"`` strings (harness.spec.kinds.load_object resolves
them) are dependencies no import statement shows. They are counted apart: each must name a module
and a top-level object that exist, and only a registry module may name a later stage (that is a
registry's job: the task kinds name their engines so that validating a task never imports torch).
They are left out of the circle check: an engine imports the registry that names it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "harness"
STAGES = (
    "leaves",
    "store",
    "models",
    "spec",
    "engines",
    "execution",
    "compare",
    "analysis",
    "report",
    "workflows",
    "cli",
    "api",
)
LEAVES = {"errors", "digests", "outputs", "determinism", "hubenv", "isa", "vocabulary"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "leaves"  # the package root holds the version and names the public API lazily (a registry)
    if parts[1] in LEAVES:
        return "leaves"
    if parts[1] in STAGES:
        return parts[1]
    raise AssertionError(
        f"{module} belongs to no stage; add it to the layout (tests/test_layout.py, docs/architecture.md)"
    )


#: a lazy registry reference: "harness.engines.musicgen:MusicGenEngine"
REFERENCE = re.compile(r"(harness(?:\.\w+)+):\w+(?:\.\w+)*")


#: the modules whose job is to name later stages' objects lazily
REGISTRIES = {"harness", "harness.spec.kinds", "harness.execution.executors"}


def references_of(source: str) -> set[str]:
    """The ``"module:object"`` strings in ``source`` (whole string constants only)."""
    return {
        node.value
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and REFERENCE.fullmatch(node.value)
    }


def top_level_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def reference_problems(sources: dict[str, str]) -> list[str]:
    """Registry references that name nothing, or a later stage from outside a registry."""
    rank = {s: i for i, s in enumerate(STAGES)}
    problems = []
    for here, source in sorted(sources.items()):
        for ref in sorted(references_of(source)):
            module, _, obj = ref.partition(":")
            if module not in sources:
                problems.append(f"{here}: {ref!r} names no module")
            elif obj.split(".")[0] not in top_level_names(sources[module]):
                problems.append(f"{here}: {ref!r}: {module} defines no {obj.split('.')[0]}")
            elif here not in REGISTRIES and rank[stage_of(here)] < rank[stage_of(module)]:
                problems.append(f"{here} ({stage_of(here)}) names {ref} ({stage_of(module)}) outside a registry")
    return problems


def module_sources() -> dict[str, str]:
    return {module_name(f): f.read_text() for f in sorted(ROOT.rglob("*.py"))}


def imports_of(source: str, modules: set[str], here: str) -> set[str]:
    """The harness modules ``source`` imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    tree = ast.parse(source)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "harness")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import: from the importing module's package, up level - 1
                pkg = here.split(".") if here in packages(modules) else here.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, *([base] if base else [])])
            if base.split(".")[0] != "harness":
                continue
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules)
    return {m for m in found if m in modules} - {here}


def packages(modules: set[str]) -> set[str]:
    return {m.rsplit(".", 1)[0] for m in modules if "." in m}


def import_graph() -> dict[str, set[str]]:
    files = sorted(ROOT.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imports_of(f.read_text(), modules, module_name(f)) for f in files}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def against_the_flow(graph: dict[str, set[str]]) -> list[str]:
    rank = {s: i for i, s in enumerate(STAGES)}
    return [
        f"{a} ({stage_of(a)}) imports {b} ({stage_of(b)})"
        for a, bs in sorted(graph.items())
        for b in sorted(bs)
        if rank[stage_of(a)] < rank[stage_of(b)]
    ]


def test_no_import_circles():
    found = cycles(import_graph())
    assert found == [], "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_no_stage_imports_a_later_stage():
    found = against_the_flow(import_graph())
    assert found == [], "imports against the flow:\n" + "\n".join(found)


def test_registry_references_resolve_and_follow_the_flow():
    found = reference_problems(module_sources())
    assert found == [], "registry references:\n" + "\n".join(found)


def test_every_module_has_a_stage():
    for module in import_graph():
        stage_of(module)


def test_the_checks_catch_what_they_look_for():
    """Planted: a circle through a function-level import, and a spec module importing the CLI."""
    modules = {"harness.spec.a", "harness.spec.b", "harness.cli.main", "harness.spec"}
    a = imports_of("def f():\n    from harness.spec import b\n", modules, "harness.spec.a")
    b = imports_of("import harness.spec.a\nfrom harness.cli.main import main\n", modules, "harness.spec.b")
    hidden = imports_of(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from harness.cli.main import x\n",
        modules,
        "harness.spec.a",
    )
    lazy = reference_problems(
        {
            "harness.spec.a": 'E = "harness.cli.main:main"\nT = "see harness.spec.b:x why"\n',
            "harness.spec.b": 'R = "harness.cli.main:gone"\nS = "harness.cli.nothing:x"\n',
            "harness.cli.main": "def main():\n    pass\n",
        }
    )
    graph = {"harness.spec.a": a, "harness.spec.b": b, "harness.cli.main": set()}
    assert cycles(graph) == [["harness.spec.a", "harness.spec.b"]]
    assert against_the_flow(graph) == ["harness.spec.b (spec) imports harness.cli.main (cli)"]
    assert hidden == {"harness.cli.main"}  # an annotation's import is a dependency too
    assert lazy == [
        "harness.spec.a (spec) names harness.cli.main:main (cli) outside a registry",
        "harness.spec.b: 'harness.cli.main:gone': harness.cli.main defines no gone",
        "harness.spec.b: 'harness.cli.nothing:x' names no module",
    ]  # not the sentence in T
    relative = imports_of("from . import b\nfrom ..cli.main import main\n", modules, "harness.spec.a")
    assert relative == {"harness.spec", "harness.spec.b", "harness.cli.main"}
