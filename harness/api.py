"""The public Python API: what a user scripts, in one module (re-exported by ``harness``).

Why one module: the entry points used to live where each command needed them (the runner, the
analysis, the certify workflow, the pytest plugin), so a script studying a model had to import
internal modules that move. These functions are the stable names; each is what the command of
the same purpose does, without printing. Heavy imports (torch, pandas, pydantic) happen inside
them, so ``import harness`` stays cheap. No name here is a subpackage's (``harness.compare`` is
the comparison stage, so the function is ``compare_runs``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.workflows.reproducible import DEFAULT_ACROSS

if TYPE_CHECKING:
    import pandas as pd

    from harness.analysis.calibration_study import CalibrationStudy
    from harness.analysis.certificate import Certificate
    from harness.analysis.crossrun import CrossRunResult
    from harness.analysis.model import Analysis

__all__ = [
    "analyze_run",
    "assert_reproducible",
    "calibrate",
    "certify",
    "compare_runs",
    "load_run",
    "reproducibility_matrix",
    "run_matrix",
]

#: the report formats written by default, as ``harness run`` writes them
REPORT_FORMATS = ("md", "html", "json")


def run_matrix(
    matrix: str | Path,
    out: str | Path | None = None,
    *,
    resume: bool = False,
    parallel: int | None = None,
    executor: str = "local",
    address: str | None = None,
    formats: Sequence[str] = REPORT_FORMATS,
    progress: bool = False,
) -> Analysis:
    """Run every cell of a matrix file in fresh worker processes, analyse the run with every
    artifact verified, and write its reports, as ``harness run`` does.

    Args:
        matrix: a matrix TOML file.
        out: the run directory (default ``reports/runs/<time>-<name>``).
        resume: finish an interrupted run in ``out``.
        parallel: CPU workers at once (default: the matrix's ``parallel`` key, 1).
        executor: ``"local"`` worker processes or ``"ray"`` (the ``fleet`` extra).
        address: the Ray cluster (``"auto"`` or ``HOST:PORT``); default a private local one.
        formats: the reports to write (``md``, ``html``, ``json``).
        progress: print a progress line per cell.

    Returns:
        The analysis: ``.configs`` (a verdict per configuration), ``.gates``, ``.problems``;
        ``.run_dir`` holds the records and reports. A failed gate does not raise: read
        ``analysis.gates`` (or call [assert_reproducible][harness.api.assert_reproducible]).
    """
    from harness.execution.executors import make_executor
    from harness.execution.runner import run_matrix as run
    from harness.spec.matrix import load_matrix

    spec = load_matrix(str(matrix))
    runner = make_executor(executor, address=address)
    try:
        summary = run(
            spec, Path(out) if out else None, resume=resume, progress=progress, executor=runner, parallel=parallel
        )
    finally:
        runner.shutdown()
    return analyze_run(summary.run_dir, formats=formats)


def analyze_run(run: str | Path, *, verify: bool = True, formats: Sequence[str] = ()) -> Analysis:
    """Analyse a run directory: verdicts, comparisons, gates, costs, as ``harness report`` does.

    Args:
        run: the run directory.
        verify: re-hash every artifact against its record (without it no gate can pass:
            no gate passes on evidence nobody checked).
        formats: also (re)write these reports into the run directory (``md``, ``html``, ``json``).
    """
    from harness.analysis.run import analyze_run as analyse
    from harness.report.write import write_reports

    analysis = analyse(Path(run), verify_artifacts=verify)
    if formats:
        write_reports(analysis, Path(run), list(formats))
    return analysis


def compare_runs(
    a: str | Path, b: str | Path, *, match: str = "spec", trusted_keys: set[str] | None = None
) -> CrossRunResult:
    """Compare two runs or bundles configuration by configuration, as ``harness compare`` does
    for outputs: the level, the first divergence and what differed (environment, axes, flags).

    Args:
        a: the reference run directory or bundle.
        b: the run directory or bundle compared with it.
        match: ``"spec"`` (equal spec hashes) or ``"ignore:AXIS"`` (threads, batch_size, dtype,
            load, isa, device).
        trusted_keys: hex Ed25519 public keys; a bundle not signed by one of them is refused.
    """
    from harness.analysis.crossrun import compare_runs as compare
    from harness.store.bundle import open_run_or_bundle

    with open_run_or_bundle(a, trusted_keys) as run_a, open_run_or_bundle(b, trusted_keys) as run_b:
        return compare(run_a, run_b, match=match)


def certify(
    reference: str | Path,
    *,
    matrix: str | Path | None = None,
    out: str | Path | None = None,
    device: str | None = None,
    threads: int | None = None,
    isa: str | None = None,
    trusted_keys: set[str] | None = None,
) -> tuple[Certificate, Path]:
    """Re-run a reference bundle's cells on this machine and certify it, as ``harness certify``
    does (unsigned: sign ``certificate.json`` with ``harness certify --sign`` or the store's
    signing functions).

    Args:
        reference: the reference run's bundle.
        matrix: run this matrix instead (its cells must be in the reference).
        out: the run directory for this machine's run.
        device: re-run the cells on this device (``cuda:0``, ``cpu``) instead of the reference's.
        threads: emulate another thread count (named in the certificate).
        isa: emulate another CPU kind's kernels (named in the certificate).
        trusted_keys: hex Ed25519 public keys the reference must be signed by.

    Returns:
        The certificate (``.configs`` with a verdict each, ``.passed``) and the run directory,
        which holds ``certificate.md`` and ``certificate.json``.
    """
    from harness.workflows.certify import certify as run

    return run(
        Path(reference),
        matrix=Path(matrix) if matrix else None,
        out=Path(out) if out else None,
        threads=threads,
        trusted_keys=trusted_keys,
        isa=isa,
        device=device,
    )


def calibrate(
    runs: Sequence[str | Path],
    *,
    rule: str = "composite",
    out: str | Path | None = None,
    sign: str | Path | None = None,
) -> CalibrationStudy:
    """Derive a rule's calibration from study runs and other machines' bundles, as ``harness
    calibrate`` does: honest pairs by the one source that separates them, cheats made from the
    runs' own outputs, a held-out half split by task, Wilson rates and the scope.

    Args:
        runs: study run directories and bundles (another machine's executions are ``machine`` pairs).
        rule: ``composite`` or ``replay``.
        out: also write the calibration file here (the file a matrix's ``[validators.KIND]`` names).
        sign: sign it with this Ed25519 private key file (``harness keygen``).

    Returns:
        The study: ``.calibration`` (the sealed, possibly signed, file's content), ``.configs``
        (per configuration: its entry, honest pairs and cheats) and ``.notes``.
    """
    from harness.cli.trust import sign_calibration, signing_key
    from harness.store.files import atomic_write_json
    from harness.workflows.calibrate import run_calibration

    key = signing_key(str(sign)) if sign else None
    study = run_calibration([Path(r) for r in runs], rule)
    if key is not None:
        study.calibration = sign_calibration(study.calibration, key)
    if out is not None:
        atomic_write_json(Path(out), study.calibration.model_dump(mode="json", exclude_none=False))
    return study


def assert_reproducible(
    task: str | Path | Mapping[str, Any],
    across: Iterable[str] = DEFAULT_ACROSS,
    **options: Any,
) -> Analysis:
    """Run one task document over the named dimensions (``repeat``, ``process``, ``threads``,
    ``batch``, ``load``, ``isa``) in fresh worker processes and raise ``AssertionError``, in the
    report's words, when a configuration is not reproducible across them.

    ``options``: ``out``, ``base``, ``seeds``, ``dtypes``, ``timeout_s``, ``validators``,
    ``thresholds``, as in a matrix (see the pytest plugin on [In CI and in pytest](ci.md)).
    Returns the analysis when every configuration passes.
    """
    from harness.workflows.reproducible import assert_reproducible as check

    return check(task, across, **options)


def reproducibility_matrix(
    task: str | Path | Mapping[str, Any], across: Iterable[str] = DEFAULT_ACROSS, **options: Any
) -> dict[str, Any]:
    """The matrix document [assert_reproducible][harness.api.assert_reproducible] runs: one task
    compared across the named dimensions, judging exactly those. Write it as TOML to run it
    with ``harness run``, or pass it on to study it."""
    from harness.workflows.reproducible import reproducibility_matrix as build

    return build(task, across, **options)


def load_run(path: str | Path) -> pd.DataFrame:
    """A run directory's records as a pandas DataFrame, one row per execution (axes and timings
    flattened); a torn last line is set aside, a newer schema refused."""
    from harness.store.run import load_run as load

    return load(path)
