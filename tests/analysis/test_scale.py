"""The synthetic scale run (scripts/scale_analysis.py) at 2,000 records: the analysis finds
the answers the synthesizer planted. Counts only; timings are the script's business."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from harness.analysis.run import analyze_run
from harness.report.run import render_json, render_markdown

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "scale_analysis.py"


def load_scale_module():
    spec = importlib.util.spec_from_file_location("scale_analysis", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    run = tmp_path_factory.mktemp("scale") / "run"
    info = load_scale_module().synthesize_run(run, configs=10, seeds=5, repeats=5)
    return run, info, analyze_run(run)


def test_synthesizer_writes_the_planned_run(synthetic) -> None:
    _run, info, a = synthetic
    assert info["records"] == 2000 == a.records
    assert info["failed_cells"] == 1
    # a synthetic run records no matrix and its artifacts were not verified: no gate can pass on it
    assert a.problems == [
        "the manifest records no matrix: completeness cannot be checked",
        "artifacts and receipts were not verified (--no-verify): the gate cannot pass",
    ]
    assert len(a.configs) == 10
    assert sorted(set(info["expected"].values())) == ["failed", "not_ready", "ready", "ready_with_tolerance"]


def test_analysis_finds_the_planted_verdicts(synthetic) -> None:
    _, info, a = synthetic
    assert {c.config_id: c.verdict for c in a.configs} == info["expected"]
    gates = {g.config_id: g.passed for g in a.gates}
    assert gates.pop("evidence") is False
    assert gates == {k: v in ("ready", "ready_with_tolerance") for k, v in info["expected"].items()}


def test_analysis_pair_counts(synthetic) -> None:
    _, _info, a = synthetic
    for c in a.configs:
        assert sum(c.counts.values()) == 200
        if c.verdict == "failed":
            assert c.counts == {"ok": 199, "timeout": 1}
            continue
        # 20 specs (5 seeds x 2 threads x 2 batch); reference w0/r0; 4 more repeats in w0, 5 in w1
        assert c.dimensions["repeat"].pairs == 80 and c.dimensions["repeat"].worst == "bitwise"
        assert c.dimensions["process"].pairs == 100
        assert c.dimensions["threads"].pairs == 10 and c.dimensions["batch"].pairs == 10
        assert c.dimensions["batch"].worst == "divergent"
        assert c.seed_sensitive is True
        # the first execution after each model load is counted as warm-up, not measured
        assert c.cost.executions == 200
        assert c.cost.latency_s["n"] + c.cost.latency_s["warmup"] == 200 and c.cost.latency_s["warmup"] >= 1
        if c.verdict == "ready_with_tolerance":
            assert c.dimensions["threads"].worst == "tokens"
            assert c.agreement["tokens"]["p3of3"] == 1.0 and c.agreement["bitwise"]["p3of3"] < 1.0
        if c.verdict == "not_ready":
            assert c.dimensions["process"].worst == "divergent"
            assert c.dimensions["process"].levels["divergent"] == 4 * 5  # first seed, 4 specs x 5 repeats
        if c.verdict == "ready":
            assert c.agreement["bitwise"]["p3of3"] == 1.0
    drift = [c for c in a.configs if c.dtype == "bfloat16" and c.dtype_drift is not None]
    assert len(drift) == 5


def test_reports_render(synthetic) -> None:
    _, info, a = synthetic
    md = render_markdown(a)
    for config_id in info["expected"]:
        assert config_id in md
    assert '"records": 2000' in render_json(a)
