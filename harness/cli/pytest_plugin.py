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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from harness.analysis.model import Analysis, ConfigResult

#: what ``across`` may name, and the matrix settings that make each compared
ACROSS = {
    "repeat": "repeats 2 in one worker",
    "process": "2 worker processes",
    "threads": "threads 1 and 2",
    "batch": "batch sizes 1 and 2",
    "load": "cold and warm model loads",
    "isa": "native and the next narrower CPU kernels (below-native)",
}
DEFAULT_ACROSS = ("repeat", "process")
FORMATS = ("md", "json")  # the HTML page draws plots (matplotlib): a test does not need it


class HarnessGateFailure(AssertionError):
    """A reproducibility gate that failed; its message is the report's explanation."""


# --- running ------------------------------------------------------------------------------------


@dataclass
class MatrixRun:
    """A finished, analysed run."""

    run_dir: Path
    analysis: Analysis

    @property
    def report(self) -> Path:
        return self.run_dir / "report.md"

    def config(self, config_id: str) -> ConfigResult:
        for c in self.analysis.configs:
            if c.config_id == config_id:
                return c
        raise KeyError(
            f"{config_id}: no such configuration in {self.run_dir} "
            f"(have: {', '.join(c.config_id for c in self.analysis.configs)})"
        )

    def failure(self, config_id: str | None = None) -> str | None:
        """Why the gate failed (every configuration, or one), in the report's words; None: passed."""
        from harness.report.junit import failure_text

        ids = [config_id] if config_id else [c.config_id for c in self.analysis.configs]
        texts = [t for t in (failure_text(self.analysis, i) for i in ids) if t]
        if not ids:  # no configuration: only the evidence gate can speak
            evidence = next((g for g in self.analysis.gates if g.config_id == "evidence" and not g.passed), None)
            texts = [f"evidence: {evidence.reason}"] if evidence else []
        if not texts:
            return None
        unique = list(dict.fromkeys(texts))
        return "\n".join(unique) + f"\nreport: {self.report}"

    def assert_passed(self, config_id: str | None = None) -> MatrixRun:
        """Fail (AssertionError, in the report's words) when a gate failed."""
        __tracebackhide__ = True
        text = self.failure(config_id)
        if text:
            raise AssertionError(text)
        return self


def run_matrix_doc(
    doc: dict[str, Any], out: Path, source: Path | None = None, formats: Sequence[str] = FORMATS
) -> MatrixRun:
    """Run a matrix document (its task files relative to ``source``'s folder) into ``out``,
    analyse it with every artifact verified, as ``harness run`` does, and write its reports."""
    from harness.analysis.run import analyze_run
    from harness.execution.runner import run_matrix
    from harness.report.write import write_reports
    from harness.spec.matrix import matrix_from_doc

    matrix = matrix_from_doc(doc, source)
    summary = run_matrix(matrix, Path(out), progress=False)
    analysis = analyze_run(summary.run_dir, verify_artifacts=True)
    write_reports(analysis, summary.run_dir, list(formats))
    return MatrixRun(summary.run_dir, analysis)


def _task_name(task: str | Path | Mapping[str, Any]) -> str:
    stem = Path(task).stem if not isinstance(task, Mapping) else "task"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "task"
    return name[:64] if name[0].isalnum() else f"t{name}"[:64]


def reproducibility_matrix(
    task: str | Path | Mapping[str, Any],
    across: Iterable[str] = DEFAULT_ACROSS,
    *,
    base: Path | None = None,
    seeds: Sequence[int] | None = None,
    dtypes: Sequence[str] | None = None,
    timeout_s: float = 300.0,
    validators: Mapping[str, Any] | None = None,
    thresholds: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The matrix document that compares one task across the named dimensions and judges
    exactly those (``gates.verdict_dimensions``), failing on not_ready and failed."""
    across = list(dict.fromkeys(across))
    if not across:
        raise ValueError("across: name at least one dimension (" + ", ".join(ACROSS) + ")")
    unknown = [d for d in across if d not in ACROSS]
    if unknown:
        hint = (
            " (a fleet dimension: run the matrix with harness run --executor ray)"
            if unknown[0] in ("node", "device")
            else ""
        )
        raise ValueError(f"across: unknown dimension {unknown[0]!r}{hint}; expected some of {', '.join(ACROSS)}")
    if isinstance(task, Mapping):
        entry: dict[str, Any] = {"name": "task", "task": dict(task)}
    else:
        path = Path(task)
        if not path.is_absolute():
            path = (base or Path.cwd()) / path
        entry = {"name": _task_name(path), "file": str(path)}
    axes: dict[str, Any] = {
        "threads": [1, 2] if "threads" in across else [1],
        "batch_size": [1, 2] if "batch" in across else [1],
        "load": ["cold", "warm"] if "load" in across else ["warm"],
        "isa": ["native", "below-native"] if "isa" in across else ["native"],
    }
    if seeds is not None:
        axes["seed"] = list(seeds)
    if dtypes is not None:
        axes["dtype"] = list(dtypes)
    doc: dict[str, Any] = {
        "schema_version": 1,
        "name": f"reproducible-{entry['name']}"[:64],
        "description": "assert_reproducible: " + ", ".join(f"{d} ({ACROSS[d]})" for d in across),
        "repeats": 2 if "repeat" in across else 1,
        "workers": 2 if "process" in across else 1,
        "timeout_s": timeout_s,
        "tasks": [entry],
        "axes": axes,
        "gates": {"fail_on": ["not_ready", "failed"], "verdict_dimensions": across},
    }
    if validators:
        doc["validators"] = dict(validators)
    if thresholds:
        doc["thresholds"] = dict(thresholds)
    return doc


def assert_reproducible(
    task: str | Path | Mapping[str, Any],
    across: Iterable[str] = DEFAULT_ACROSS,
    *,
    out: str | Path | None = None,
    base: str | Path | None = None,
    seeds: Sequence[int] | None = None,
    dtypes: Sequence[str] | None = None,
    timeout_s: float = 300.0,
    validators: Mapping[str, Any] | None = None,
    thresholds: Mapping[str, Any] | None = None,
) -> Analysis:
    """Run ``task`` (a task file, or a task document as a dict) over the dimensions named in
    ``across`` in fresh worker processes; raise AssertionError in the report's words when a
    configuration is not reproducible across them (or its cells failed). Returns the analysis.

    ``out``: the run directory (default: a new temporary one, kept for reading); ``validators``
    (e.g. ``{"audio": {"rule": "composite", ...}}``) as in a matrix: without one, only
    bitwise passes."""
    __tracebackhide__ = True
    doc = reproducibility_matrix(
        task,
        across,
        base=Path(base) if base else None,
        seeds=seeds,
        dtypes=dtypes,
        timeout_s=timeout_s,
        validators=validators,
        thresholds=thresholds,
    )
    run_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="harness-reproducible-")) / "run"
    run = run_matrix_doc(doc, run_dir)
    if not run.analysis.configs:
        raise AssertionError(f"{doc['name']}: no configuration ran\nreport: {run.report}")
    run.assert_passed()
    return run.analysis


# --- pytest: options, marker, fixtures ----------------------------------------------------------

_MATRICES = pytest.StashKey[dict]()
_RUNS = pytest.StashKey[dict]()


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
    matrices = {}
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
def _assert_reproducible(request: pytest.FixtureRequest, tmp_path: Path):
    """``assert_reproducible(task, across=[...], **options)``: run the task over those dimensions
    in fresh workers (run directory under the test's tmp_path, or --harness-out) and fail the test
    in the report's words when it is not reproducible. Returns the analysis."""
    count = [0]

    def check(task: str | Path | Mapping[str, Any], across: Iterable[str] = DEFAULT_ACROSS, **options: Any):
        __tracebackhide__ = True
        count[0] += 1
        options.setdefault("base", request.config.rootpath)
        if "out" not in options:
            root = request.config.getoption("harness_out", default=None)
            options["out"] = (
                _out_root(request.config, _slug(request.node.name)) if root else tmp_path
            ) / f"run{count[0]}"
        return assert_reproducible(task, across, **options)

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

    def collect(self):
        from harness.spec.matrix import expand, matrix_from_doc

        self.doc = _read_matrix(self.path)
        matrix = matrix_from_doc(self.doc, self.path)
        self.cells_by_config: dict[str, list[Any]] = {}
        for cell in expand(matrix, _devices_for(matrix)):
            self.cells_by_config.setdefault(cell.config_id, []).append(cell)
        self.runs: dict[frozenset, MatrixRun] = {}
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
        self.runs[selected] = run = run_matrix_doc(doc, _out_root(self.config, label) / "run", self.path)
        return run


def _devices_for(matrix: Any) -> list[str]:
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


def _only(doc: dict[str, Any], dropped: list[Any]) -> dict[str, Any]:
    """``doc`` with the configurations of ``dropped`` cells excluded (a configuration's verdict
    rests on its own cells only, so the others' absence changes none)."""
    rules = []
    seen = set()
    for cell in dropped:
        a = cell.axes
        rule = {
            "task": cell.task_name,
            "dtype": a.dtype,
            "quantize_bits": a.quantize_bits or "none",
            "device": a.device,
            "profile": a.profile,
            "tf32": a.tf32,
        }
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
        run = self.parent.run_for(self)
        c = run.config(self.config_id)
        text = run.failure(self.config_id)
        if text:
            raise HarnessGateFailure(text)
        if c.verdict == "skipped":
            pytest.skip(f"skipped: {c.reason}")
        if c.verdict == "untested":
            pytest.skip(f"untested: {c.reason}")

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, HarnessGateFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[os.PathLike[str] | str, int | None, str]:
        return self.path, None, self.config_id
