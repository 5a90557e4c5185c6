"""The Ray executor on a real Ray cluster (no mocks): two emulated nodes on this machine.

``ray.cluster_utils.Cluster`` starts a head node with 1 CPU and a second node with 2 CPUs
(two raylets, two node ids); a CPU cell with ``threads = auto`` runs with its node's CPU
count, so the two nodes' floats really differ as two kinds of hardware would. One Ray run
(with a Ray worker killed mid-cell, then ``--resume``) and one local ``--parallel 2`` run of
the same matrix are shared by the tests below. Skipped when ray is not installed.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_cli
from harness.spec.matrix import dump_matrix

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fleet,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="ray is not installed (pip install -e '.[fleet]' runs the fleet tests)",
    ),
]

ROOT = Path(__file__).parent.parent.parent
KILLED = "mg/auto/qnone/seed1/cpu/tauto/b1/pon/warm/w1/r0"  # a cell with another after it in its job


def _matrix(path: Path) -> Path:
    tasks = {
        name: json.loads((ROOT / "matrices" / "tasks" / f).read_text())
        for name, f in (("gpt", "tiny-gpt2-chatbot.json"), ("mg", "tiny-musicgen-pop.json"))
    }
    tasks["gpt"]["generation_config"]["max_new_tokens"] = 12
    tasks["mg"]["generation_config"]["max_new_tokens"] = 48
    doc = {
        "schema_version": 1,
        "name": "fleet",
        "repeats": 1,
        "workers": 2,
        "timeout_s": 300,
        "tasks": [{"name": n, "task": t} for n, t in tasks.items()],
        "axes": {"seed": [1], "threads": [1, "auto"]},
        # as matrices/smoke.toml: MusicGen's thread and node wobble (equal codes, floats ~1e-7
        # apart) passes only through the composite validator, with its measured bounds and rates
        "thresholds": {"waveform_max_abs": 1.431e-06, "waveform_rel_l2": 6.196e-07},
        "validators": {
            "audio": {
                "rule": "composite",
                "false_accept": 0.0,
                "false_reject": 0.0,
                "pairs": 480,
                "source": "harness validators (README)",
            }
        },
    }
    path.write_text(dump_matrix(doc))
    return path


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, tiny_gpt2, tiny_musicgen):
    """Cluster up; the Ray run with a killed Ray worker, its resume, and a local run."""
    import ray
    from ray.cluster_utils import Cluster

    tmp = tmp_path_factory.mktemp("fleet")
    matrix = _matrix(tmp / "fleet.toml")
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray_run, local_run = tmp / "ray", tmp / "local"
        ray_args = [
            "run",
            str(matrix),
            "--executor",
            "ray",
            "--address",
            cluster.address,
            "--out",
            str(ray_run),
            "--no-progress",
        ]
        first = run_cli(*ray_args, env={"HARNESS_RAY_FAULT": f"kill:{KILLED}@{tmp / 'killed-once'}"})
        before_resume = _records(ray_run)
        resumed = run_cli(*ray_args, "--resume")
        local = run_cli("run", str(matrix), "--parallel", "2", "--out", str(local_run), "--no-progress")
        yield {
            "ray": ray_run,
            "local": local_run,
            "first": first,
            "before_resume": before_resume,
            "resumed": resumed,
            "local_proc": local,
            "once": tmp / "killed-once",
            "address": cluster.address,
            "matrix": matrix,
        }
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_ray_records_equal_the_local_executor_and_report_works(fleet):
    assert fleet["resumed"].returncode == 0, fleet["resumed"].stderr[-3000:]
    assert fleet["local_proc"].returncode == 0, fleet["local_proc"].stderr[-3000:]
    ray_ok = {r["cell_id"]: r for r in _records(fleet["ray"]) if r["status"] == "ok"}
    local_ok = {r["cell_id"]: r for r in _records(fleet["local"]) if r["status"] == "ok"}
    assert set(ray_ok) == set(local_ok) and len(ray_ok) == 8
    pinned = [c for c in ray_ok if "/t1/" in c]  # one thread on every node: the same bytes as locally
    assert len(pinned) == 4
    for cell in pinned:
        assert ray_ok[cell]["digests"] == local_ok[cell]["digests"], cell
    manifest = json.loads((fleet["ray"] / "manifest.json").read_text())
    assert len(manifest["nodes"]) == 2
    for key, node in manifest["nodes"].items():
        assert node["ray_node_id"] == key and node["hostname"]
        assert {"gpu_names", "driver", "cuda_runtime", "libraries"} <= set(node["environment"])
    assert all(r["node"]["ray_node_id"] in manifest["nodes"] for r in ray_ok.values())
    assert [s["executor"] for s in manifest["execution"]] == ["ray", "ray"]
    assert len(list((fleet["ray"] / "artifacts").glob("*.npz"))) == 8  # written by the driver
    report = run_cli("report", str(fleet["ray"]))
    assert report.returncode == 0, report.stderr[-2000:]
    text = (fleet["ray"] / "report.md").read_text()
    assert "## Nodes" in text and "Verdicts per environment class" in text
    local_text = (fleet["local"] / "report.md").read_text()
    assert "## Nodes" not in local_text and "costs measured under parallel execution" in local_text


def test_two_emulated_nodes_give_a_node_dimension(fleet):
    from harness.analysis.run import analyze_run

    a = analyze_run(fleet["ray"])
    assert a.fleet is not None and len(a.fleet.nodes) == 2
    assert len(a.fleet.mix) == 2  # 1 CPU and 2 CPUs: two environment classes
    configs = {c.task: c for c in a.configs}
    assert configs["gpt"].dimensions["node"].worst == "bitwise"
    assert configs["mg"].dimensions["node"].worst == "tokens"  # same codes, floats differ with threads
    assert configs["mg"].nodes.across_classes == "tokens"
    assert configs["mg"].nodes.consensus["tokens"]["p3of3"] == 1.0
    assert configs["mg"].nodes.consensus["bitwise"]["p3of3"] < 1.0
    assert "tokens across them" in configs["mg"].nodes.summary
    # repeat/process/threads stay within a node: a cross-node pair is never called "process"
    assert all(a.fleet.reference_node in c.nodes.levels for c in configs.values())


def test_a_ray_worker_killed_mid_cell_loses_only_that_cell_and_resume_completes_it(fleet):
    first = fleet["before_resume"]
    assert fleet["once"].exists(), "the drill never fired: no cell id matched " + KILLED
    assert fleet["first"].returncode == 1  # the failed cell fails the gate
    failed = [r for r in first if r["status"] != "ok"]
    assert [r["cell_id"] for r in failed] == [KILLED]
    assert failed[0]["status"] == "failed" and "lost on Ray node" in failed[0]["reason"]
    assert failed[0]["node"]["ray_node_id"]  # which node it was lost on
    assert len([r for r in first if r["status"] == "ok"]) == 7  # the rest of its job went on in a new task
    final = _records(fleet["ray"])
    ok = Counter(r["cell_id"] for r in final if r["status"] == "ok")
    assert len(ok) == 8 and set(ok.values()) == {1}  # resume ran it once; no duplicate ok records
    assert len(final) == len(first) + 1


def test_a_node_with_another_harness_build_refuses_its_jobs(fleet, tmp_path, monkeypatch):
    """The driver's code digest differs from the nodes' (as after a partial upgrade of a
    fleet): every cell is recorded failed with the reason, none runs, and the gate fails."""
    from harness.cli.main import main
    from harness.execution import env

    monkeypatch.setattr(env, "code_digest", lambda: "0" * 64)
    run = tmp_path / "mismatch"
    code = main(
        [
            "run",
            str(fleet["matrix"]),
            "--executor",
            "ray",
            "--address",
            fleet["address"],
            "--out",
            str(run),
            "--no-progress",
        ]
    )
    assert code == 1
    records = _records(run)
    assert len(records) == 8 and {r["status"] for r in records} == {"failed"}
    assert all("another harness build" in r["reason"] and "000000000000" in r["reason"] for r in records)
    assert not list((run / "artifacts").glob("*.npz"))


def test_the_node_side_refusal_names_both_builds():
    from harness.execution.env import code_digest
    from harness.execution.ray_executor import _code_mismatch

    here = code_digest()
    assert len(here) == 64 and code_digest() == here  # stable for one installed tree
    assert _code_mismatch(here) is None
    why = _code_mismatch("f" * 64)
    assert why is not None and here[:12] in why and "ffffffffffff" in why
    assert "driver's None" in (_code_mismatch(None) or "")  # a driver too old to send its digest
