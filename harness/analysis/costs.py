"""Compare the costs of two runs, configuration by configuration (asv-style marks).

A run's cost row per configuration (config_id) carries what ``harness.analysis.bench.compare_costs``
matches on: a spec hash over the cells that were asked (a changed matrix is "not
comparable", never "regressed"), the environment's cost key (other hardware or torch: not
comparable either), whether any cell failed, latency statistics of the ok executions and the
peak memory. Latency statistics come from ``harness.analysis.run.latency_stats`` (``total_s -
load_s``, the first execution after a model load counted as warm-up), the same numbers as the
report's cost section, so the two never disagree. Each row also carries those latencies
themselves (``samples``, one per measured execution: ``harness.analysis.run.measured_latencies``),
so a change is reported only when a two-sample test calls it significant
(harness.analysis.significance).

Rendering here is only a table of the decided rows: the marks and messages come from
harness.analysis.bench.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from harness.analysis.bench import Check, CostRow, SignificantCheck, compare_costs
from harness.analysis.run import latency_stats, latest_records, measured_latencies
from harness.digests import digest_json
from harness.execution.env import cost_key
from harness.store.records import Record
from harness.store.run import RunStore
from harness.vocabulary import FAILED_STATUSES

MARK_LEGEND = {
    "x": "not comparable (spec or environment differs, or only on one side)",
    "!": "newly failing",
    "+": "slower",
    "-": "faster",
}
SIGNIFICANCE_NOTE = (
    "+ and - mark only a change a two-sample test calls significant (Mann-Whitney U at 95% over "
    "the per-execution latencies; the change is the Hodges-Lehmann ratio with its 95% interval)"
)


def _as_store(run: RunStore | str | Path) -> RunStore:
    return run if isinstance(run, RunStore) else RunStore(run)


def cost_rows_for_run(store: RunStore | str | Path) -> list[dict[str, Any]]:
    """One row per configuration, sorted by config_id, in the shape ``compare_costs`` takes:
    ``key``, ``spec_hash``, ``env_key``, ``ok``, ``stats`` (a Stats dump of the latencies of
    the ok, non-warm-up executions), ``samples`` (those latencies, seconds),
    ``peak_memory_bytes`` (max over them), plus ``executions`` and ``statuses`` for display."""
    store = _as_store(store)
    manifest = store.manifest()
    env_key = cost_key(manifest.environment or {})
    by_config: dict[str, list[Record]] = defaultdict(list)
    for r in latest_records(store.load_records().records):
        by_config[r.config_id].append(r)
    rows: list[dict[str, Any]] = []
    for config_id in sorted(by_config):
        recs = by_config[config_id]
        statuses: dict[str, int] = defaultdict(int)
        for r in recs:
            statuses[r.status] += 1
        measured = [r for r in recs if r.ok]
        memory = [r.peak_memory_bytes for r in measured if r.peak_memory_bytes]
        rows.append(
            {
                "key": config_id,
                "spec_hash": digest_json(sorted({r.spec_hash for r in recs}))[:16],
                "env_key": env_key,
                "ok": not any(statuses.get(s) for s in FAILED_STATUSES),
                "stats": latency_stats(measured).model_dump(),
                "samples": measured_latencies(measured),
                "peak_memory_bytes": max(memory) if memory else None,
                "executions": len(measured),
                "statuses": dict(sorted(statuses.items())),
            }
        )
    return rows


def compare_run_costs(
    baseline: RunStore | str | Path,
    current: RunStore | str | Path,
    checks: Sequence[Check | SignificantCheck | str] = (),
    *,
    factor: float = 1.1,
    min_effect: float = 0.0,
) -> list[CostRow]:
    """Cost rows of ``current`` against ``baseline``: marks (``x ! + -``, see MARK_LEGEND),
    ``+``/``-`` only for a significant change of at least ``min_effect`` (a fraction), and a
    message per failed check (``"significant"``, or thresholds such as ``"median:10%"``,
    ``"peak_memory:5%"``; a bad check raises ValueError naming it)."""
    return compare_costs(
        cost_rows_for_run(baseline), cost_rows_for_run(current), checks, factor=factor, min_effect=min_effect
    )


def cost_rows_for_benchmarks(path: str | Path) -> list[dict[str, Any]]:
    """One row per benchmark of a pytest-benchmark JSON file (``--benchmark-json`` or an
    autosave under ``.benchmarks/``), in the shape ``compare_costs`` takes. ``samples`` are the
    per-round times (``stats.data``), present only when the file was saved with
    ``--benchmark-save-data``; without them (an empty list) a row is compared by its summary
    numbers only.
    Rows of files made on another machine or Python are "not comparable"."""
    from harness.analysis.benchfile import read_benchmarks
    from harness.store.run import read_json_file

    path = Path(path)
    doc = read_json_file(path, "pytest-benchmark file")
    benchmarks = read_benchmarks(doc, path)
    machine_info = doc.get("machine_info")
    info: dict[str, Any] = machine_info if isinstance(machine_info, dict) else {}
    cpu_info = info.get("cpu")
    cpu: dict[str, Any] = cpu_info if isinstance(cpu_info, dict) else {}
    env_key = digest_json(
        {
            "cpu": cpu.get("brand_raw"),
            "machine": info.get("machine"),
            "python": info.get("python_version"),
            "implementation": info.get("python_implementation"),
        }
    )[:12]
    rows: list[dict[str, Any]] = []
    for bench in benchmarks:
        stats = bench.stats
        summary = {
            "n": stats.rounds,
            "stdev": stats.stddev,  # None for one round
            **{k: getattr(stats, k) for k in ("min", "max", "mean", "median", "q1", "q3", "iqr")},
        }
        rows.append(
            {
                "key": bench.key,
                "spec_hash": None,
                "env_key": env_key,
                "ok": True,
                "stats": summary,
                "peak_memory_bytes": None,
                "samples": list(stats.data),
            }
        )
    return rows


def compare_benchmark_files(
    baseline: str | Path,
    current: str | Path,
    checks: Sequence[Check | SignificantCheck | str] = (),
    *,
    factor: float = 1.1,
    min_effect: float = 0.0,
) -> list[CostRow]:
    """Two pytest-benchmark files, benchmark by benchmark, judged as ``compare_run_costs`` judges runs."""
    return compare_costs(
        cost_rows_for_benchmarks(baseline),
        cost_rows_for_benchmarks(current),
        checks,
        factor=factor,
        min_effect=min_effect,
    )


def has_regressions(rows: Iterable[CostRow]) -> bool:
    """True when a check failed or a configuration is newly failing: what should fail CI."""
    return any(row.regressed or row.mark == "!" for row in rows)
