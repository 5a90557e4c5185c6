"""Cost comparison of two runs: rows per configuration, asv marks, checks, Markdown table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.analysis.run import analyze_run
from harness.analysis.costs import compare_run_costs, cost_rows_for_run, has_regressions, render_cost_table
from harness.store.records import Record
from harness.store.run import RunStore
from tests.analysis.test_scale import load_scale_module

CONFIGS = 8  # includes the synthesizer's failed configuration (index 7)


def _run(path: Path, **kw) -> Path:
    load_scale_module().synthesize_run(path, configs=CONFIGS, seeds=1, repeats=2, **kw)
    return path


def _rewrite(path: Path, edit) -> None:
    lines = (path / "results.jsonl").read_text().splitlines()
    out = [json.dumps(doc) for doc in (edit(json.loads(line)) for line in lines) if doc is not None]
    (path / "results.jsonl").write_text("\n".join(out) + "\n")


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("costs") / "base")


def test_rows_per_config(base: Path) -> None:
    rows = cost_rows_for_run(RunStore(base))
    assert [r["key"] for r in rows] == sorted(r["key"] for r in rows) and len(rows) == CONFIGS
    for row in rows:
        assert set(row) >= {"key", "spec_hash", "env_key", "ok", "stats", "peak_memory_bytes"}
        assert len(row["spec_hash"]) == 16 and row["env_key"]
    failed = [r for r in rows if not r["ok"]]
    assert len(failed) == 1 and failed[0]["statuses"] == {"ok": 15, "timeout": 1}
    assert all(r["stats"]["n"] + r["stats"]["warmup"] == r["executions"] for r in rows)


def test_rows_agree_with_the_analysis_costs(base: Path) -> None:
    rows = {r["key"]: r for r in cost_rows_for_run(base)}
    for c in analyze_run(base).configs:
        assert rows[c.config_id]["stats"] == c.cost.latency_s
        assert rows[c.config_id]["peak_memory_bytes"] == c.cost.peak_memory_bytes


def test_same_run_is_unchanged(base: Path) -> None:
    rows = compare_run_costs(base, base, ["median:10%", "peak_memory:5%"])
    assert [r.mark for r in rows] == [" "] * CONFIGS
    assert all(r.ratio == pytest.approx(1.0) and not r.messages for r in rows if r.ratio is not None)
    assert not has_regressions(rows)


def test_slower_run_is_marked_and_checked(base: Path, tmp_path: Path) -> None:
    slow = _run(tmp_path / "slow", latency_scale=1.5)
    rows = compare_run_costs(base, slow, ["median:10%"])
    ok_rows = [r for r in rows if r.key != "gpt-0003/bfloat16/qnone/cpu/pon"]
    assert all(r.mark == "+" and r.ratio > 1.3 for r in ok_rows)
    assert all(r.messages and r.messages[0].startswith("median ") for r in ok_rows)
    assert has_regressions(rows)
    # the failed configuration is failed on both sides: not ranked, not checked
    failed = next(r for r in rows if r.key == "gpt-0003/bfloat16/qnone/cpu/pon")
    assert failed.mark == " " and not failed.messages
    faster = compare_run_costs(slow, base, ["median:10%"])
    assert all(r.mark == "-" for r in faster if r.key != failed.key) and not has_regressions(faster)


def test_not_comparable_and_newly_failing(base: Path, tmp_path: Path) -> None:
    cur = _run(tmp_path / "cur")
    first = "gpt-0001/float32/qnone/cpu/pon"
    changed = "musicgen-0000/bfloat16/qnone/cpu/pon"
    gone = "musicgen-0002/float32/qnone/cpu/pon"

    def edit(doc):
        if doc["config_id"] == gone:
            return None
        if doc["config_id"] == changed:
            doc["spec_hash"] = "f" * 16
        if doc["cell_id"] == f"gpt-0001/float32/qnone/seed7/cpu/t2/b2/pon/warm/w1/r1":
            doc.update(status="failed", reason="RuntimeError: boom")
            for key in ("digests", "artifact", "timings", "output"):
                doc.pop(key, None)
        return doc

    _rewrite(cur, edit)
    rows = {r.key: r for r in compare_run_costs(base, cur, ["median:10%"])}
    assert rows[changed].mark == "x" and rows[changed].note == "spec hash differs" and not rows[changed].messages
    assert rows[gone].mark == "x" and rows[gone].note == "only in baseline"
    assert rows[first].mark == "!"
    assert has_regressions(rows.values())
    # another machine: every row is not comparable
    manifest = json.loads((cur / "manifest.json").read_text())
    manifest["environment"]["processor"] = "Another CPU"
    (cur / "manifest.json").write_text(json.dumps(manifest))
    assert {r.note for r in compare_run_costs(base, cur) if r.key not in (changed, gone)} == {"environment differs"}


def test_resumed_cell_counts_once(base: Path, tmp_path: Path) -> None:
    cur = _run(tmp_path / "resumed")
    docs = [json.loads(line) for line in (cur / "results.jsonl").read_text().splitlines()]
    again = dict(docs[0], finished_at=docs[0]["finished_at"] + 1)
    Record.model_validate(again)
    with open(cur / "results.jsonl", "a") as fh:
        fh.write(json.dumps(again) + "\n")
    rows = {r["key"]: r for r in cost_rows_for_run(cur)}
    assert rows[docs[0]["config_id"]]["executions"] == 16


def test_render_cost_table(base: Path, tmp_path: Path) -> None:
    slow = _run(tmp_path / "slow", latency_scale=1.5)
    text = render_cost_table(compare_run_costs(base, slow, ["median:10%"]))
    lines = text.splitlines()
    assert lines[0].startswith("| | Configuration | Baseline median | Current median | Ratio | Notes |")
    assert sum(1 for line in lines if line.startswith("| + |")) == CONFIGS - 1
    assert "1.5" in text and "median " in text and "% > 10%)" in text
    assert lines[-1].startswith(f"{CONFIGS} configurations: 0 x (not comparable), 0 !")
    assert "7 + (slower)" in lines[-1] and "7 with failed checks" in lines[-1]
    assert render_cost_table([]).splitlines()[-1].startswith("0 configurations")


def test_table_escapes_pipes() -> None:
    from harness.analysis.bench import CostRow

    text = render_cost_table([CostRow(key="a|b", mark="x", note="only in current")])
    assert "| x | a\\|b | - | - | - | only in current |" in text
