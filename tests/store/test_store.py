"""Run directories: versions, torn lines, corrupted artifacts, the lock."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.digests import digest_array
from harness.store.records import Axes, Record
from harness.store.run import RunLocked, RunStore, StoreError, load_run


def _record(i: int, **kw) -> Record:
    axes = Axes(dtype="float32", quantize_bits=None, seed=i, device="cpu")
    return Record(
        cell_id=f"t/float32/qnone/seed{i}",
        spec_hash=f"s{i}",
        config_id="t/float32",
        task_name="t",
        kind="audio",
        model="tiny:musicgen",
        axes=axes,
        status="ok",
        **kw,
    )


def test_append_load_and_dataframe(tmp_path):
    store = RunStore.create(tmp_path / "run", {"run_id": "r"})
    for i in range(3):
        store.append(_record(i, timings={"total_s": 0.1 * i}))
    frame = load_run(tmp_path / "run")
    assert list(frame["seed"]) == [0, 1, 2] and "t_total_s" in frame


def test_torn_last_line_is_set_aside_and_the_rest_loads(tmp_path):
    store = RunStore.create(tmp_path / "run", {"run_id": "r"})
    store.append(_record(0))
    store.append(_record(1))
    with open(tmp_path / "run" / "results.jsonl", "a") as fh:
        fh.write('{"schema_version": 1, "cell_id": "t/tor')  # a crash mid-write
    loaded = store.load_records()
    assert [r.cell_id for r in loaded.records] == ["t/float32/qnone/seed0", "t/float32/qnone/seed1"]
    assert len(loaded.problems) == 1 and "torn last line" in loaded.problems[0]
    note = store.repair_tail()
    assert note and "results.torn.jsonl" in note
    store.append(_record(2))
    assert [r.axes.seed for r in store.load_records().records] == [0, 1, 2]
    assert store.load_records().problems == []


def test_newer_versions_are_refused(tmp_path):
    store = RunStore.create(tmp_path / "run", {"run_id": "r"})
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    (tmp_path / "run" / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(StoreError, match="schema_version 99 is newer"):
        store.manifest()
    store2 = RunStore.create(tmp_path / "run2", {"run_id": "r"})
    line = json.loads(_record(0).model_dump_json())
    (tmp_path / "run2" / "results.jsonl").write_text(json.dumps({**line, "schema_version": 7}) + "\n")
    with pytest.raises(StoreError, match="newer"):
        store2.load_records()


def test_flipped_byte_in_artifact_is_detected(tmp_path):
    store = RunStore.create(tmp_path / "run", {"run_id": "r"})
    wave = np.linspace(-1, 1, 4000, dtype=np.float32).reshape(-1, 1)
    rel = store.write_artifact("cell", {"waveform": wave})
    expected = {"waveform": digest_array(wave)}
    assert np.array_equal(store.load_artifact(rel, expected)["waveform"], wave)
    path = tmp_path / "run" / rel
    data = bytearray(path.read_bytes())
    data[-200] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(StoreError, match=r"(does not match its recorded digest|unreadable)"):
        store.load_artifact(rel, expected)


def test_artifacts_refuse_pickle_and_escaping_paths(tmp_path):
    store = RunStore.create(tmp_path / "run", {"run_id": "r"})
    np.save(tmp_path / "run" / "artifacts" / "evil.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    import zipfile

    with zipfile.ZipFile(tmp_path / "run" / "artifacts" / "evil.npz", "w") as z:
        z.write(tmp_path / "run" / "artifacts" / "evil.npy", "x.npy")
    with pytest.raises(StoreError, match=r"object dtype .pickle.; refused"):  # from the header, before loading
        store.load_artifact("artifacts/evil.npz")
    with pytest.raises(StoreError, match="leaves the run directory"):
        store.load_artifact("../../etc/passwd")


def test_second_writer_is_refused_with_a_clear_message(tmp_path):
    holder = RunStore.create(tmp_path / "run", {"run_id": "r"})  # noqa: F841 (holds the lock)
    with pytest.raises(RunLocked, match="another harness process is writing this run"):
        RunStore(tmp_path / "run").lock()
