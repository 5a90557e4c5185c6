"""A calibration study on a fleet: a real two-node Ray cluster on this machine whose second node
runs another CPU kind's kernels (its raylet's environment caps ATen, oneDNN and oneMKL at AVX2,
as an AVX2-only machine's would be), ``harness run --executor ray``, then ``harness calibrate``.
The study's honest pairs include the ``node`` source, and the calibration's scope lists the
kernel classes of both nodes. Skipped when ray is not installed, or when this CPU's native
kernels are AVX2's already (then the two nodes would not differ)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from harness.spec.matrix import dump_matrix

pytestmark = [
    pytest.mark.slow,
    pytest.mark.fleet,
    pytest.mark.skipif(
        importlib.util.find_spec("ray") is None,
        reason="ray is not installed (pip install -e '.[fleet]' runs the fleet tests)",
    ),
]
ROOT = Path(__file__).resolve().parents[2]
AVX2_NODE = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
AVX2_CLASS = "aten-avx2/onednn-avx2"


def _study(path: Path) -> Path:
    task = json.loads((ROOT / "matrices" / "tasks" / "tiny-musicgen-pop.json").read_text())
    task["generation_config"]["max_new_tokens"] = 16
    other = dict(task, prompt="calm acoustic guitar with a soft piano melody")
    doc = {
        "schema_version": 1,
        "name": "fleet-study",
        "repeats": 1,
        "workers": 2,  # two worker groups per configuration: Ray places them on both nodes
        "timeout_s": 300,
        "tasks": [{"name": "pop", "task": task}, {"name": "acoustic", "task": other}],
        "axes": {"dtype": ["float32"], "seed": [1, 2], "threads": [1], "batch_size": [1]},
        "gates": {"fail_on": ["failed"]},
    }
    path.write_text(dump_matrix(doc))
    return path


def test_a_study_on_a_two_node_ray_cluster_of_two_kernel_classes_calibrates_both(tmp_path, cli, tiny_musicgen):
    import ray
    from ray.cluster_utils import Cluster

    from harness.isa import environment_ceiling
    from harness.spec.calibration import load_calibration

    ceiling = environment_ceiling()
    if ceiling is not None and ceiling[0] <= 3:
        pytest.skip(f"this run is capped at AVX2 already ({ceiling[1]}): both nodes would run one kernel class")
    cluster = Cluster(initialize_head=True, connect=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, env_vars=AVX2_NODE)
        cluster.wait_for_nodes()
        run = tmp_path / "run"
        res = cli(
            "run",
            str(_study(tmp_path / "study.toml")),
            "--executor",
            "ray",
            "--address",
            cluster.address,
            "--out",
            str(run),
            "--no-progress",
        )
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    finally:
        ray.shutdown()
        cluster.shutdown()
    records = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines() if line.strip()]
    classes = {r["determinism"]["kernels"]["class"] for r in records if r["status"] == "ok"}
    if len(classes) < 2:
        pytest.skip(f"Ray placed every worker group on one node ({classes}): no node pair to calibrate")
    assert AVX2_CLASS in classes
    res = cli("calibrate", str(run), "--rule", "composite", "--out", str(tmp_path / "cal.json"))
    assert res.returncode == 0, res.stdout + res.stderr
    (entry,) = load_calibration(tmp_path / "cal.json").entries
    assert set(entry.scope.kernel_classes) == classes  # both nodes' kernels, read back in their records
    assert "node" in entry.scope.sources  # float32 keeps its codes across the two kernel sets
    assert entry.false_reject.errors == 0 and entry.false_accept.errors == 0
