"""The typed manifest: versions upgrade step by step or are refused, fields are typed, unknown
fields survive a rewrite, and the checked metadata gate refuses merging or comparing runs
made on other tiny-model weights."""

from __future__ import annotations

import json

import pytest

from harness.errors import StoreError
from harness.store.files import upgrade
from harness.store.manifest import CHECKED_ON_MERGE, Manifest, metadata_conflicts, parse_manifest
from harness.store.run import RunStore


def test_older_versions_go_through_each_update_to_n():
    def update_to_2(doc):
        doc["renamed"] = doc.pop("old")
        return doc

    steps = {2: update_to_2, 3: lambda d: {**d, "added": True}}
    doc = upgrade({"schema_version": 1, "old": "x"}, 3, steps, "m.json")
    assert doc == {"schema_version": 3, "renamed": "x", "added": True}
    with pytest.raises(StoreError, match=r"m.json: schema_version 4 is newer than this harness supports"):
        upgrade({"schema_version": 4}, 3, steps, "m.json")
    with pytest.raises(
        StoreError, match=r"schema_version 1 is older than this harness reads .3. and there is no upgrade"
    ):
        upgrade({"schema_version": 1}, 3, {3: steps[3]}, "m.json")


def test_fields_are_typed_and_one_bad_field_is_one_line():
    m = parse_manifest({"schema_version": 1, "run_id": "r", "matrix": {"spec": {"name": "smoke"}}}, "m.json")
    assert m.matrix_name == "smoke" and m.matrix_tasks == {} and m.environment is None
    with pytest.raises(StoreError, match=r"m.json: manifest field tiny_models: "):
        parse_manifest({"schema_version": 1, "tiny_models": ["not", "a", "mapping"]}, "m.json")


def test_unknown_fields_survive_an_update(tmp_path):
    store = RunStore.create(tmp_path / "run", {"run_id": "r", "added_by_a_tool": {"x": 1}})
    store.update_manifest(status="complete")
    doc = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert doc == {"schema_version": 1, "run_id": "r", "added_by_a_tool": {"x": 1}, "status": "complete"}


def test_checked_metadata_names_each_conflict():
    a = Manifest(
        harness_version="0.1.0", matrix_digest="m1", tiny_models={"tiny:gpt2": "a" * 64, "tiny:musicgen": "c" * 64}
    )
    b = Manifest(harness_version="0.2.0", matrix_digest="m1", tiny_models={"tiny:gpt2": "b" * 64})
    assert metadata_conflicts(a, b, CHECKED_ON_MERGE) == [
        "made by harness 0.1.0, this is 0.2.0",
        f"tiny model tiny:gpt2 has other weights ({'a' * 12} vs {'b' * 12}); rebuild it with `harness tiny` "
        f"from the same harness version",
    ]
    assert metadata_conflicts(a, a, CHECKED_ON_MERGE) == []


def test_runs_on_other_tiny_weights_are_not_compared(tmp_path):
    from harness.analysis.crossrun import compare_runs

    a = RunStore.create(tmp_path / "a", {"run_id": "a", "tiny_models": {"tiny:gpt2": "a" * 64}})
    b = RunStore.create(tmp_path / "b", {"run_id": "b", "tiny_models": {"tiny:gpt2": "b" * 64}})
    with pytest.raises(StoreError, match=r"cannot compare .* tiny model tiny:gpt2 has other weights"):
        compare_runs(a, b)
