"""Analysis on hand-made records: a few records and artifacts written here, no model, no
worker, so each verdict rule is checked in milliseconds on exactly the evidence it needs."""

from __future__ import annotations

import numpy as np
import pytest

from harness.analysis.run import analyze_run
from harness.digests import digest_array
from harness.store.records import Axes, Record
from harness.store.run import RunStore

CONFIG = "hand/float32/qnone/cpu/pon"


def write_run(tmp_path, outputs: dict[tuple[int, int], np.ndarray], kind: str = "gpt", fail_on=("not_ready", "failed")):
    """A run of one config whose (worker, repeat) executions returned ``outputs`` (token ids)."""
    store = RunStore.create(
        tmp_path / "run", {"run_id": "hand", "matrix": {"spec": {"name": "hand", "gates": {"fail_on": list(fail_on)}}}}
    )
    for (worker, repeat), ids in sorted(outputs.items()):
        cell = f"hand/float32/qnone/seed1/cpu/t1/b1/pon/w{worker}/r{repeat}"
        arrays = {"token_ids": ids}
        digests = {"token_ids": digest_array(ids), "output": digest_array(ids), "tokens": digest_array(ids)}
        artifact = store.write_artifact(cell.replace("/", "__"), arrays)
        store.append(
            Record(
                cell_id=cell,
                spec_hash="s1",
                config_id=CONFIG,
                task_name="hand",
                kind=kind,
                model="tiny:gpt2",
                status="ok",
                digests=digests,
                artifact=artifact,
                axes=Axes(
                    dtype="float32", quantize_bits=None, seed=1, device="cpu", threads=1, repeat=repeat, worker=worker
                ),
                timings={"total_s": 0.01, "generate_s": 0.01},
            )
        )
    store.unlock()
    return tmp_path / "run"


def ids(*values: int) -> np.ndarray:
    return np.array([values], dtype=np.int64)


def test_equal_outputs_everywhere_are_ready(tmp_path):
    same = ids(1, 2, 3, 4)
    a = analyze_run(write_run(tmp_path, {(0, 0): same, (0, 1): same, (1, 0): same, (1, 1): same}))
    (config,) = a.configs
    assert config.verdict == "ready"
    assert config.dimensions["repeat"].worst == "bitwise" and config.dimensions["process"].worst == "bitwise"
    # every configuration's gate passes; the evidence gate cannot (hand-made records, no matrix, not verified)
    assert all(g.passed for g in a.gates if g.config_id != "evidence")
    assert [g.passed for g in a.gates if g.config_id == "evidence"] == [False]


def test_a_token_changed_in_one_process_is_not_ready_with_its_first_step(tmp_path):
    same, other = ids(1, 2, 3, 4), ids(1, 2, 9, 4)
    a = analyze_run(write_run(tmp_path, {(0, 0): same, (0, 1): same, (1, 0): other, (1, 1): other}))
    (config,) = a.configs
    assert config.verdict == "not_ready"
    assert config.dimensions["repeat"].worst == "bitwise"
    assert config.dimensions["process"].worst == "divergent"
    assert set(config.dimensions["process"].first_divergence) == {2}  # the third token
    assert not a.gates[0].passed


def test_a_damaged_artifact_is_reported_not_raised(tmp_path):
    """Outputs differ, so the comparison must read the arrays; one artifact is garbage."""
    run = write_run(tmp_path, {(0, 0): ids(1, 2, 3, 4), (0, 1): ids(1, 2, 9, 4)})
    victim = next((run / "artifacts").glob("*r1.npz"))
    victim.write_bytes(b"not an npz")
    a = analyze_run(run)
    assert any("artifact unreadable" in p for p in a.problems)
    assert a.configs[0].verdict == "failed"


def test_a_bug_in_the_comparison_is_not_hidden_as_an_unreadable_artifact(tmp_path, monkeypatch):
    """Only StoreError means "artifact unreadable"; any other exception is a bug and surfaces."""
    import harness.analysis.run as analysis_run

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug in compare()")

    monkeypatch.setattr(analysis_run, "compare", broken)
    with pytest.raises(ZeroDivisionError):
        analyze_run(write_run(tmp_path, {(0, 0): ids(1, 2, 3, 4), (0, 1): ids(1, 2, 9, 4)}))


def test_the_analysis_model_names_exactly_the_comparison_levels():
    """report.json is read back by `harness show`: its level fields accept the levels the
    comparison produces and nothing else (an unknown one was a KeyError in the renderer)."""
    import typing

    from harness.analysis.model import Level
    from harness.compare.levels import LEVELS

    assert typing.get_args(Level) == LEVELS
