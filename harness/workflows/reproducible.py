"""Reproducibility as an assertion: one task run over named dimensions in fresh worker processes,
judged by the harness's own analysis, failing in the report's words.

Why here and not in the pytest plugin: a script or another test runner asserts reproducibility
too (``harness.assert_reproducible``), without pytest. The plugin (harness.cli.pytest_plugin)
wraps these for its fixtures, marker and ``--harness-matrix`` sessions.
"""

from __future__ import annotations

import contextlib
import functools
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.vocabulary import DIMENSIONS

if TYPE_CHECKING:
    from harness.analysis.model import Analysis, ConfigResult

#: what ``across`` may name, and the matrix settings that make each compared
ACROSS = {d.name: d.reproduced_by for d in DIMENSIONS.values() if d.reproduced_by}
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

    @functools.cached_property
    def decisions(self) -> dict[tuple[str, str], tuple[str, str]]:
        """Each (configuration, dimension)'s verdict and reason, decided once for the run (the
        pytest plugin asks for one configuration's failure per test item)."""
        from harness.analysis.judgement import dimension_verdicts

        return dimension_verdicts(self.analysis)

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
        texts = [t for t in (failure_text(self.analysis, i, self.decisions) for i in ids) if t]
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
    with no_max_cells_option():
        summary = run_matrix(matrix, Path(out), progress=False)
    analysis = analyze_run(summary.run_dir, verify_artifacts=True)
    write_reports(analysis, summary.run_dir, list(formats))
    return MatrixRun(summary.run_dir, analysis)


@contextlib.contextmanager
def no_max_cells_option() -> Iterator[None]:
    """The plugin has no ``--max-cells``: a matrix over the cell limit says what its user can do."""
    from harness.spec.matrix import MAX_CELLS, MatrixError

    try:
        yield
    except MatrixError as err:
        if "--max-cells" not in str(err):
            raise
        text = str(err).replace("; pass --max-cells", "").replace(" or pass --max-cells", "")
        raise MatrixError(
            f"{text}; the pytest plugin runs at most {MAX_CELLS} cells: narrow the axes, or run the matrix "
            f"with `harness run MATRIX --max-cells N`"
        ) from None


def _names(value: Any, what: str) -> list[str]:
    """A list of names from a list, tuple or set of strings, or from one string (``"repeat"``
    is ``["repeat"]``, not its characters); anything else is refused naming the argument."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise TypeError(f"{what}: expected a name or a list of names, got {type(value).__name__} {value!r}")


def _ints(value: Any, what: str) -> list[int]:
    """A list of integers from a list or tuple of them, or from one integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return list(value)
    raise TypeError(f"{what}: expected an integer or a list of integers, got {type(value).__name__} {value!r}")


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
    exactly those (``gates.verdict_dimensions``), failing on not_ready and failed. Arguments are
    checked first, each refusal naming the argument (issue 29): a single string where a list is
    meant is that one name."""
    if not isinstance(task, (str, Path, Mapping)):
        raise TypeError(f"task: expected a task file path or a task document (dict), got {type(task).__name__}")
    across = list(dict.fromkeys(_names(across, "across")))
    seeds = None if seeds is None else _ints(seeds, "seeds")
    dtypes = None if dtypes is None else _names(dtypes, "dtypes")
    for what, table in (("validators", validators), ("thresholds", thresholds)):
        if table is not None and not isinstance(table, Mapping):
            raise TypeError(f"{what}: expected a table (dict), got {type(table).__name__}")
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not 0 < timeout_s < float("inf"):
        raise ValueError(f"timeout_s: expected a number of seconds > 0, got {timeout_s!r}")
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
