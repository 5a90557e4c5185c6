"""scripts/overhead.py's and scripts/profile_cost.py's plumbing: which samples reach the
significance test, in what order the rounds run, how a ratio is printed. No timing is asserted."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from harness.analysis.significance import compare_samples

ROOT = Path(__file__).resolve().parents[2]


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def overhead() -> ModuleType:
    return _script("overhead")


@given(st.lists(st.sampled_from("ABCDE"), min_size=1, max_size=5, unique=True), st.integers(0, 50))
def test_rounds_alternate_so_every_column_runs_first_and_last_equally(overhead, columns, rounds):
    order = overhead.round_order
    firsts = [order(columns, r)[0] for r in range(2 * rounds)]
    assert all(sorted(order(columns, r)) == sorted(columns) for r in range(3))
    assert firsts.count(columns[0]) == firsts.count(columns[-1]) or len(columns) == 1


def test_the_ratio_is_the_significance_modules_estimate_and_interval(overhead):
    bare, harness = [10.0, 10.2, 9.9, 10.1, 10.3], [11.0, 11.3, 10.9, 11.2, 11.1]
    change = overhead.ratio_of(bare, harness)
    assert change == compare_samples(bare, harness)
    text = overhead.ratio_text(change)
    assert text == f"ratio {change.ratio:.2f} [95% CI {change.ratio_low:.2f}, {change.ratio_high:.2f}]"
    assert change.ratio_low is not None and 1.0 < change.ratio_low <= change.ratio <= change.ratio_high
    assert overhead.ratio_figures(change)["n"] == [5, 5]


def test_too_few_rounds_say_so_instead_of_an_interval(overhead):
    two = overhead.ratio_of([1.0, 1.1], [1.2, 1.3])
    assert overhead.ratio_text(two).endswith("[95% CI unbounded: too few samples]")
    assert overhead.ratio_text(overhead.ratio_of([], [1.0])) == "ratio ? (no samples)"


def test_each_workers_first_cell_is_left_out(overhead):
    records = [
        {"status": "ok", "started_at": 3.0, "timings": {"total_s": 0.5}},
        {"status": "ok", "started_at": 1.0, "timings": {"total_s": 9.0}},  # the first: imports + load
        {"status": "failed", "started_at": 2.0, "timings": {}},
        {"status": "ok", "started_at": 2.5, "timings": {"total_s": 0.4}},
    ]
    assert overhead.after_warmup(records) == [0.4, 0.5]


def test_the_load_line_says_whether_the_machine_was_busy(overhead):
    assert "quiet" in overhead.load_text((0.1, 0.2, 0.3), (0.4, 0.2, 0.3), 2)
    assert "BUSY" in overhead.load_text((0.1, 0.2, 0.3), (6.0, 3.0, 1.0), 2)
    assert "before 0.10 0.20 0.30, after 6.00 3.00 1.00 on 2 CPUs" in overhead.load_text(
        (0.1, 0.2, 0.3), (6.0, 3.0, 1.0), 2
    )


def test_short_and_full_modes_plan_rounds_of_a_few_cells(overhead):
    short, full = overhead.load_plan(True, None), overhead.load_plan(False, 1)
    assert short["rounds"] >= 4 and full["rounds"] >= short["rounds"], "4 per side is the least with an interval"
    assert len(overhead.cells_of(short)) >= 2 and short["kwargs"]["max_new_tokens"] < full["kwargs"]["max_new_tokens"]
    assert full["threads"] == 1 and overhead.load_plan(True, None, "cpu", 64)["kwargs"]["max_new_tokens"] == 64


def test_a_bad_baseline_tree_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "overhead.py"), "--short", "--baseline-tree", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.returncode != 0 and out.stderr.strip().splitlines() == [
        f"--baseline-tree {tmp_path}: no harness/execution/worker.py there"
    ]


def test_profile_cost_variants_change_one_part_each():
    profile_cost = _script("profile_cost")
    settings = {v: profile_cost.variant_settings(v, 2) for v in profile_cost.VARIANTS}
    assert settings == {
        "off": ("off", 2, True),
        "on": ("on", 2, True),
        "on-nofill": ("on", 2, False),
        "on-1t": ("on", 1, True),
    }
    assert set(profile_cost.AGAINST) | {"off"} == set(profile_cost.VARIANTS)


def _record(start: float, total: float, finish: float) -> dict[str, object]:
    return {"status": "ok", "started_at": start, "finished_at": finish, "timings": {"total_s": total}}


def test_the_phases_split_a_runs_wall_by_its_own_clocks(overhead, tmp_path):
    (tmp_path / "manifest.json").write_text('{"created_at": 101.0}')
    ok = [_record(104.0, 2.5, 107.0), _record(107.01, 0.5, 107.52)]
    ph = overhead.phases(ok, tmp_path, 100.0, 110.0)
    assert ph == pytest.approx(
        {"cli_start": 1.0, "worker_start": 3.0, "first_cell_imports": 0.5, "per_cell_extra": 0.02, "after": 2.48}
    )


def test_the_report_prints_every_ratio_from_the_rounds(overhead, capsys):
    plan = overhead.load_plan(True, 1)
    rounds = [1.0, 1.1, 0.9, 1.05]
    measured = {
        "rounds": 4,
        "walls": {
            "harness": [x * 12 for x in rounds],
            "off": [x * 11 for x in rounds],
            "bare": [x * 10 for x in rounds],
            "worker": [3.0, 2.9, 3.1, 3.0],
            "worker-baseline": [3.5, 3.4, 3.6, 3.5],
        },
        "cells": {
            "harness": rounds * 2,
            "off": rounds * 2,
            "bare": rounds * 2,
            "worker": [9.0] * 4,
            "worker-baseline": [10.0] * 4,
        },
        "digests": {"harness": {"1/0": "a"}, "bare": {"1/0": "a"}},
        "phases": {
            "harness": [
                dict.fromkeys(("cli_start", "worker_start", "first_cell_imports", "after"), 1.0)
                | {"per_cell_extra": 0.003}
            ]
            * 4
        },
    }
    figures = overhead.report(plan, measured, "load average ... quiet")
    out = capsys.readouterr().out
    want = overhead.ratio_text(overhead.ratio_of(measured["walls"]["bare"], measured["walls"]["harness"]))
    assert f"harness vs bare: {want}" in out and "profile on vs off: ratio 1.00" in out
    assert "vs the baseline tree, spawn to ready" in out and "3.0 ms per cell" in out
    assert figures["harness_vs_bare"]["ratio"] == pytest.approx(1.2) and figures["profile_cost_pct"] == 0.0
