"""Cost comparison of two runs: rows per configuration, asv marks, checks, Markdown table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.analysis.costs import compare_run_costs, cost_rows_for_run, has_regressions
from harness.analysis.run import analyze_run
from harness.report.costs import render_cost_table
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
        if doc["cell_id"] == "gpt-0001/float32/qnone/seed7/cpu/t2/b2/pon/warm/w1/r1":
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
    assert lines[0].startswith(
        "| Mark | Configuration | Baseline median | Current median | Ratio | Change (95% CI) | Notes |"
    )
    assert sum(1 for line in lines if line.startswith("| + |")) == CONFIGS - 1
    assert "1.5" in text and "median " in text and "% > 10%)" in text and " slower [95% CI +" in text
    assert lines[-1].startswith(f"{CONFIGS} configurations: 0 x (not comparable), 0 !")
    assert "7 + (slower)" in lines[-1] and "7 with failed checks" in lines[-1]
    assert lines[-1].endswith("7 tested, 0 not significant.") and "Mann-Whitney U at 95%" in text
    assert render_cost_table([]).splitlines()[-1].startswith("0 configurations")


def test_table_escapes_pipes() -> None:
    from harness.analysis.bench import CostRow

    text = render_cost_table([CostRow(key="a|b", mark="x", note="only in current")])
    assert "| x | a\\|b | - | - | - | - | only in current |" in text


FAILED_CONFIG = "gpt-0003/bfloat16/qnone/cpu/pon"


def test_rows_carry_the_measured_samples(base: Path) -> None:
    for row in cost_rows_for_run(base):
        assert len(row["samples"]) == row["stats"]["n"]
        assert sorted(row["samples"]) and min(row["samples"]) == row["stats"]["min"]


def test_one_outlier_per_configuration_is_not_significant(base: Path, tmp_path: Path) -> None:
    """One execution per configuration 100 times slower: a mean threshold fires, the test does not."""
    cur = _run(tmp_path / "outlier")
    seen: set[str] = set()

    def edit(doc):
        t = doc.get("timings") or {}
        if doc["status"] == "ok" and t.get("load_s", 0) <= 0 and doc["config_id"] not in seen:
            seen.add(doc["config_id"])
            extra = 99 * t["generate_s"]
            t["generate_s"] += extra
            t["total_s"] += extra
        return doc

    _rewrite(cur, edit)
    rows = [r for r in compare_run_costs(base, cur, ["significant", "mean:10%"]) if r.key != FAILED_CONFIG]
    assert len(rows) == CONFIGS - 1
    for r in rows:
        assert r.change is not None and r.change.verdict == "not significant", r.change
        assert r.mark == " " and len(r.messages) == 1 and r.messages[0].startswith("mean ")
    assert not has_regressions(compare_run_costs(base, cur, ["significant"]))


def test_significant_check_and_min_effect(base: Path, tmp_path: Path) -> None:
    slow = _run(tmp_path / "slow", latency_scale=1.5)
    rows = [r for r in compare_run_costs(base, slow, ["significant"]) if r.key != FAILED_CONFIG]
    assert all(r.mark == "+" and r.change.verdict == "slower" for r in rows)
    assert all(r.messages[0].startswith("latency significantly slower (+4") for r in rows)
    assert all(1.3 < r.change.ratio_low < r.change.ratio < r.change.ratio_high < 1.7 for r in rows)
    big = [r for r in compare_run_costs(base, slow, ["significant"], min_effect=0.6) if r.key != FAILED_CONFIG]
    assert all(r.mark == " " and r.change.verdict == "below min effect" and not r.messages for r in big)
    assert not has_regressions(big)


def test_compare_command_check_and_min_effect(base: Path, tmp_path: Path, capsys) -> None:
    from harness.cli.main import main

    slow = _run(tmp_path / "slow", latency_scale=1.5)
    assert main(["compare", str(base), str(slow), "--check"]) == 1  # a bare --check: significant
    out = capsys.readouterr().out
    assert "| Change (95% CI) |" in out and "% slower [95% CI +" in out and "Mann-Whitney U p=" in out
    assert main(["compare", str(base), str(slow), "--check", "--min-effect", "60%"]) == 0
    assert "below --min-effect 60%" in capsys.readouterr().out
    assert main(["compare", str(base), str(base), "--check", "significant", "--check", "median:10%"]) == 0
    assert "not significant: +0.0%" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["compare", str(base), str(slow), "--min-effect", "lots"])
    assert "min effect 'lots'" in capsys.readouterr().err


def _bench_file(path: Path, samples: dict[str, list[float] | None], cpu: str = "Synthetic CPU") -> Path:
    """A pytest-benchmark JSON file as ``--benchmark-json --benchmark-save-data`` writes it."""
    from harness.analysis.bench import summarize

    benchmarks = []
    for name, data in samples.items():
        values = data if data is not None else [0.01, 0.011, 0.012]
        s = summarize(values)
        stats = {
            "min": s.min,
            "max": s.max,
            "mean": s.mean,
            "stddev": s.stdev,
            "rounds": s.n,
            "median": s.median,
            "iqr": s.iqr,
            "q1": s.q1,
            "q3": s.q3,
            "iterations": 1,
        }
        if data is not None:
            stats["data"] = data
        benchmarks.append(
            {"group": None, "name": name, "fullname": f"tests/bench/test_x.py::{name}", "params": None, "stats": stats}
        )
    doc = {
        "machine_info": {
            "machine": "x86_64",
            "python_version": "3.11.7",
            "python_implementation": "CPython",
            "cpu": {"brand_raw": cpu},
        },
        "benchmarks": benchmarks,
        "version": "5.3.1",
    }
    path.write_text(json.dumps(doc))
    return path


def test_bench_command_on_pytest_benchmark_files(tmp_path: Path, capsys) -> None:
    from harness.cli.main import main

    rng = np.random.default_rng(7)
    base = [float(x) for x in rng.lognormal(np.log(0.01), 0.05, 200)]
    same = [float(x) for x in rng.lognormal(np.log(0.01), 0.05, 200)]
    slower = [x * 1.10 for x in same]
    a = _bench_file(tmp_path / "a.json", {"test_one": base, "test_two": base, "test_old": None})
    b = _bench_file(tmp_path / "b.json", {"test_one": same, "test_two": slower, "test_old": None})
    assert main(["bench", str(a), str(b), "--check"]) == 1
    captured = capsys.readouterr()
    lines = {line.split("|")[2].strip(): line for line in captured.out.splitlines() if "test_x.py::" in line}
    assert "not significant" in lines["tests/bench/test_x.py::test_one"]
    assert lines["tests/bench/test_x.py::test_two"].startswith("| + |") and " slower [95% CI +" in captured.out
    assert "no samples to test" in lines["tests/bench/test_x.py::test_old"]
    assert "1 benchmark(s) without per-round samples" in captured.err
    assert main(["bench", str(a), str(b), "--check", "--min-effect", "20%"]) == 0
    capsys.readouterr()
    # the threshold check is kept: on the summary numbers alone
    assert main(["bench", str(a), str(b), "--check", "median:5%"]) == 1
    assert "median " in capsys.readouterr().out
    other = _bench_file(tmp_path / "c.json", {"test_one": same}, cpu="Another CPU")
    assert main(["bench", str(a), str(other), "--check"]) == 0
    assert "environment differs" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{}")
    assert main(["bench", str(a), str(tmp_path / "bad.json")]) == 2
    assert "not a pytest-benchmark file" in capsys.readouterr().err


def _edit_bench(path: Path, edit) -> Path:
    doc = json.loads(path.read_text())
    edit(doc["benchmarks"])
    path.write_text(json.dumps(doc))
    return path


def _first_stats(**change):
    return lambda benches: benches[0]["stats"].update(change)


@pytest.mark.parametrize(
    "edit, needle",
    [
        (_first_stats(data=[-0.035, -0.03, -0.04], min=-0.04, median=-0.035, mean=-0.035, max=-0.03), "stats.min"),
        (
            _first_stats(data=[0.0, 0.0, 0.0], min=0.0, median=0.0, mean=0.0, max=0.0, q1=0.0, q3=0.0, iqr=0.0),
            "every round took 0 s",
        ),
        (_first_stats(median=True), "stats.median"),
        (_first_stats(median="0.011"), "stats.median"),
        (_first_stats(median=[0.011]), "stats.median"),
        (_first_stats(median=1e300), "stats.median"),
        (_first_stats(rounds="3"), "stats.rounds"),
        (_first_stats(median=0.5), "does not hold"),
        (lambda b: b.append(json.loads(json.dumps(b[0]))), "appears twice"),
    ],
)
def test_bench_refuses_a_hostile_benchmark_file_in_one_line(tmp_path: Path, capsys, edit, needle) -> None:
    """Issue 29 items 5 and 12: each refused naming the file and the benchmark, exit 2."""
    from harness.cli.main import main

    a = _bench_file(tmp_path / "a.json", {"test_one": [0.01, 0.011, 0.012]})
    b = _edit_bench(_bench_file(tmp_path / "b.json", {"test_one": [0.01, 0.011, 0.012]}), edit)
    assert main(["bench", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert str(b) in err and "tests/bench/test_x.py::test_one" in err and needle in err, err
