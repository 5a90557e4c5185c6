"""pytest plugin: reproducibility gates inside a test suite (entry point ``pytest11``: ``harness``).

Three ways in, all running cells in fresh worker processes through the harness's own runner
and judging them with its own analysis (a test fails exactly when ``harness run`` would fail
the gate, with the report's words: verdict, level, first divergent step, what differed, cells):

- ``assert_reproducible(task, across=[...])``, a fixture and a plain function: runs one task
  document over the named dimensions (repeat, process, threads, batch, load, isa) and raises
  ``AssertionError`` when it is not reproducible across them. A model repository's gate::

      def test_reproducible(assert_reproducible):
          assert_reproducible("tasks/my-task.json", across=["repeat", "process", "threads"])

- ``@pytest.mark.harness_matrix("matrices/smoke.toml")`` with the ``harness_matrix`` fixture:
  runs that matrix once per session and hands the test a ``MatrixRun`` (``.analysis``,
  ``.run_dir``, ``.assert_passed()``).
- ``pytest --harness-matrix matrices/smoke.toml``: the matrix as a test session, one test per
  configuration (``matrices/smoke.toml::gpt-chatbot/float32/qnone/cpu/pon``). Works with
  ``-k`` (only the selected configurations' cells run), ``-x``, ``--junitxml`` and
  pytest-xdist (each configuration an xdist worker is given runs on its own; without xdist the
  selected configurations run together, sharing worker processes, as ``harness run`` does).

Costs nothing when unused: importing this module imports pytest and the standard library only
(no torch, no pydantic); the harness is imported when an option, marker or fixture is used.
Paths in markers and in the fixture resolve against pytest's rootdir, in the plain function
against the current directory.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr, TracebackStyle  # pytest's own types, not re-exported

    from harness.analysis.model import Analysis
    from harness.spec.cell import Cell
    from harness.spec.matrix import Matrix
    from harness.workflows.reproducible import MatrixRun

#: the plain functions live in harness.workflows.reproducible (no pytest needed there); they are
#: importable from here as before (``from harness.cli.pytest_plugin import assert_reproducible``),
#: loaded on first use so that an unused plugin imports nothing of the harness
_REPRODUCIBLE = (
    "ACROSS",
    "DEFAULT_ACROSS",
    "HarnessGateFailure",
    "MatrixRun",
    "assert_reproducible",
    "reproducibility_matrix",
    "run_matrix_doc",
)


def __getattr__(name: str) -> Any:
    if name in _REPRODUCIBLE:
        from harness.workflows import reproducible

        return getattr(reproducible, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- pytest: options, marker, fixtures ----------------------------------------------------------

#: --harness-matrix: each matrix file (resolved) to the text it was given as
_MATRICES: pytest.StashKey[dict[Path, str]] = pytest.StashKey()
#: the harness_matrix fixture's runs, once per session per matrix: (matrix file, None) -> run
_RUNS: pytest.StashKey[dict[tuple[Path, None], MatrixRun]] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("harness", "consensus-harness reproducibility gates")
    group.addoption(
        "--harness-matrix",
        action="append",
        default=[],
        metavar="MATRIX",
        help="run this matrix (TOML) as tests, one per configuration; repeatable. Without test paths "
        "on the command line only the matrices are collected",
    )
    group.addoption(
        "--harness-out",
        metavar="DIR",
        default=None,
        help="put the harness runs (reports, records, artifacts) under DIR (default: pytest's temporary directory)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "harness_matrix(path): the matrix the harness_matrix fixture runs (path relative to the rootdir)"
    )
    given = config.getoption("harness_matrix", default=None) or []
    if not given:
        return
    invocation = config.invocation_params.dir
    matrices: dict[Path, str] = {}
    for text in given:
        path = Path(text) if Path(text).is_absolute() else invocation / text
        if not path.is_file():
            raise pytest.UsageError(f"--harness-matrix {text}: no such file")
        matrices[path.resolve()] = text
    config.stash[_MATRICES] = matrices
    if config.args_source != pytest.Config.ArgsSource.ARGS:  # no test paths given: the matrices alone
        config.args[:] = []
    have = {(invocation / a.split("::")[0]).resolve() for a in config.args}
    config.args.extend(text for path, text in matrices.items() if path not in have)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    matrices = parent.config.stash.get(_MATRICES, None)
    if matrices and file_path.resolve() in matrices:
        return MatrixFile.from_parent(parent, path=file_path)
    return None


def _out_root(config: pytest.Config, name: str) -> Path:
    root = config.getoption("harness_out", default=None)
    if root:
        worker = getattr(config, "workerinput", {}).get("workerid")
        base = Path(root) / worker if worker else Path(root)
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
    factory = getattr(config, "_tmp_path_factory", None)  # pytest's tmp_path_factory (its tmpdir plugin)
    return factory.mktemp(name) if factory is not None else Path(tempfile.mkdtemp(prefix=f"{name}-"))


@pytest.fixture(name="assert_reproducible")
def _assert_reproducible(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Analysis]:
    """``assert_reproducible(task, across=[...], **options)``: run the task over those dimensions
    in fresh workers (run directory under the test's tmp_path, or --harness-out) and fail the test
    in the report's words when it is not reproducible. Returns the analysis."""
    count = [0]

    def check(task: str | Path | Mapping[str, Any], across: Iterable[str] | None = None, **options: Any) -> Analysis:
        __tracebackhide__ = True
        count[0] += 1
        options.setdefault("base", request.config.rootpath)
        if "out" not in options:
            root = request.config.getoption("harness_out", default=None)
            options["out"] = (
                _out_root(request.config, _slug(request.node.name)) if root else tmp_path
            ) / f"run{count[0]}"
        from harness.workflows.reproducible import DEFAULT_ACROSS, assert_reproducible

        return assert_reproducible(task, DEFAULT_ACROSS if across is None else across, **options)

    return check


@pytest.fixture
def harness_matrix(request: pytest.FixtureRequest) -> MatrixRun:
    """The run of the matrix named by the test's ``@pytest.mark.harness_matrix(path)`` (once per
    session per matrix). ``.assert_passed()`` fails the test as ``harness run`` fails the gate."""
    marker = request.node.get_closest_marker("harness_matrix")
    if marker is None or not (marker.args or marker.kwargs.get("path")):
        pytest.fail("the harness_matrix fixture needs @pytest.mark.harness_matrix(PATH) on the test", pytrace=False)
    text = str(marker.args[0] if marker.args else marker.kwargs["path"])
    path = Path(text) if Path(text).is_absolute() else request.config.rootpath / text
    runs = request.config.stash.setdefault(_RUNS, {})
    key = (path.resolve(), None)
    if key not in runs:
        doc = _read_matrix(path)
        from harness.workflows.reproducible import run_matrix_doc

        runs[key] = run_matrix_doc(doc, _out_root(request.config, _slug(doc.get("name", path.stem))) / "run", path)
    return runs[key]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.")[:60] or "harness"


def _read_matrix(path: Path) -> dict[str, Any]:
    import tomllib

    from harness.spec.matrix import MatrixError

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise MatrixError(f"{path}: not a readable TOML matrix ({err})") from None


# --- pytest --harness-matrix: one test per configuration -----------------------------------------


class MatrixFile(pytest.File):
    """A matrix file collected as tests: one item per configuration it expands to."""

    def collect(self) -> Iterator[ConfigItem]:
        from harness.spec.matrix import expand, matrix_from_doc
        from harness.workflows.reproducible import no_max_cells_option

        self.doc = _read_matrix(self.path)
        matrix = matrix_from_doc(self.doc, self.path)
        self.cells_by_config: dict[str, list[Cell]] = {}
        with no_max_cells_option():
            cells = expand(matrix, _devices_for(matrix))
        for cell in cells:
            self.cells_by_config.setdefault(cell.config_id, []).append(cell)
        self.runs: dict[frozenset[str], MatrixRun] = {}
        for config_id in sorted(self.cells_by_config):
            yield ConfigItem.from_parent(self, name=config_id, config_id=config_id)

    def run_for(self, item: ConfigItem) -> MatrixRun:
        """The run holding ``item``'s configuration: under xdist its own; otherwise every
        selected configuration of this matrix at once (one run, shared worker processes)."""
        for selected, run in self.runs.items():
            if item.config_id in selected:
                return run
        if hasattr(self.config, "workerinput"):
            selected = frozenset([item.config_id])
        else:
            selected = frozenset(
                i.config_id for i in self.session.items if isinstance(i, ConfigItem) and i.parent is self
            )
        doc = self.doc
        if selected != frozenset(self.cells_by_config):
            doc = _only(
                self.doc, [c for cid, cells in self.cells_by_config.items() if cid not in selected for c in cells]
            )
        name = _slug(self.doc.get("name", self.path.stem))
        label = (
            name
            if len(selected) == len(self.cells_by_config)
            else f"{name}-{len(selected)}of{len(self.cells_by_config)}"
        )
        from harness.workflows.reproducible import run_matrix_doc

        self.runs[selected] = run = run_matrix_doc(doc, _out_root(self.config, label) / "run", self.path)
        return run


def _devices_for(matrix: Matrix) -> list[str]:
    """The runner's devices: looking for GPUs imports torch, so only when the matrix asks."""
    wants_gpu = any(
        d != "cpu"
        for e in [matrix.spec.axes.model_dump()] + [t.axes for t in matrix.spec.tasks]
        for d in e.get("device", []) or []
    )
    if not wants_gpu:
        return ["cpu"]
    from harness.spec.matrix import available_devices

    return available_devices()


def _only(doc: dict[str, Any], dropped: list[Cell]) -> dict[str, Any]:
    """``doc`` with the configurations of ``dropped`` cells excluded (a configuration's verdict
    rests on its own cells only, so the others' absence changes none)."""
    from harness.vocabulary import CONFIG_AXES

    rules = []
    seen = set()
    for cell in dropped:
        a = cell.axes
        rule = {"task": cell.task_name, **{axis: getattr(a, axis) for axis in CONFIG_AXES}}
        rule["quantize_bits"] = a.quantize_bits or "none"
        key = tuple(sorted((k, str(v)) for k, v in rule.items()))
        if key not in seen:
            seen.add(key)
            rules.append(rule)
    return {**doc, "exclude": [*doc.get("exclude", []), *rules]}


class ConfigItem(pytest.Item):
    """One configuration of a matrix: passes when its gate (and the run's evidence) passes."""

    def __init__(self, *, config_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_id = config_id

    def runtest(self) -> None:
        parent = self.parent
        if not isinstance(parent, MatrixFile):  # made by MatrixFile.collect only
            raise TypeError(f"{self.nodeid}: a matrix configuration's test outside its matrix file")
        run = parent.run_for(self)
        c = run.config(self.config_id)
        text = run.failure(self.config_id)
        if text:
            from harness.workflows.reproducible import HarnessGateFailure

            raise HarnessGateFailure(text)
        if c.verdict == "skipped":
            pytest.skip(f"skipped: {c.reason}")
        if c.verdict == "untested":
            pytest.skip(f"untested: {c.reason}")

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        from harness.workflows.reproducible import HarnessGateFailure

        if isinstance(excinfo.value, HarnessGateFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[os.PathLike[str] | str, int | None, str]:
        return self.path, None, self.config_id
