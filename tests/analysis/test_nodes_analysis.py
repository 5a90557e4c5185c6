"""Cross-node analysis on a hand-made fleet run (no Ray needed): the node dimension, per-class
verdicts, P(3-of-3) on the hardware mix, and the parallel-execution note on costs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.analysis.nodes import parallel_note
from harness.analysis.run import analyze_run
from harness.outputs import Output
from harness.report.run import render_markdown
from harness.store.records import Axes, Node, Record
from harness.store.run import RunStore
from tests.synthetic import RATE, music

NODES = {  # key -> environment class: two H100 nodes and one A100 node
    "n1": "NVIDIA H100 [aaaaaa]",
    "n2": "NVIDIA H100 [aaaaaa]",
    "n3": "NVIDIA A100 [bbbbbb]",
}


def _record(
    store: RunStore, node: str, worker: int, repeat: int, wave: np.ndarray, codes: np.ndarray, start: float
) -> Record:
    axes = Axes(dtype="float32", quantize_bits=None, seed=1, device="cuda:0", worker=worker, repeat=repeat)
    cell = f"mg/float32/qnone/seed1/cuda0/tauto/b1/pon/w{worker}/r{repeat}"
    out = Output(kind="audio", arrays={"waveform": wave, "codes": codes}, sampling_rate=RATE, discrete="codes")
    artifact = store.write_artifact(cell.replace("/", "__"), out.arrays)
    return Record(
        cell_id=cell,
        spec_hash="s1",
        config_id="mg/float32/qnone/cuda0/pon",
        task_name="mg",
        kind="audio",
        model="tiny:musicgen",
        axes=axes,
        status="ok",
        digests=out.digests(),
        artifact=artifact,
        output={"sampling_rate": RATE},
        timings={"total_s": 1.0, "load_s": 0.0},
        node=Node(key=node, hostname=f"host-{node}", ray_node_id=node, env_class=NODES[node]),
        started_at=start,
        finished_at=start + 1.0,
    )


def _fleet_run(tmp_path: Path) -> Path:
    store = RunStore.create(
        tmp_path / "run",
        {"run_id": "fleet", "matrix": {"spec": {"name": "fleet"}}, "execution": [{"executor": "ray", "parallel": 1}]},
    )
    wave = music(1)
    codes = np.arange(40, dtype=np.int64).reshape(1, 4, 10)
    other = wave + np.float32(1e-6)  # A100: same codes, floats a hair apart
    for worker, node in enumerate(NODES):
        for repeat in range(2):
            w = other if node == "n3" else wave
            store.append(_record(store, node, worker, repeat, w, codes, start=100.0 * worker + 10 * repeat))
    store.unlock()
    return store.path


def test_node_dimension_class_verdicts_and_consensus_on_the_mix(tmp_path: Path):
    a = analyze_run(_fleet_run(tmp_path))
    assert a.fleet is not None and a.fleet.reference_node == "n1"  # ran worker 0
    assert a.fleet.mix == {"NVIDIA A100 [bbbbbb]": 1 / 3, "NVIDIA H100 [aaaaaa]": 2 / 3}
    (c,) = a.configs
    assert c.dimensions["repeat"].pairs == 3 and c.dimensions["repeat"].worst == "bitwise"  # within each node
    assert c.dimensions["process"].pairs == 0  # another node is never "another process"
    assert c.dimensions["node"].pairs == 2 and c.dimensions["node"].levels == {"bitwise": 1, "tokens": 1}
    assert c.nodes.levels == {"n1": "reference", "n2": "bitwise", "n3": "tokens"}
    assert c.nodes.class_verdicts == {"NVIDIA A100 [bbbbbb]": "ready", "NVIDIA H100 [aaaaaa]": "ready"}
    assert c.nodes.across_classes == "tokens"
    assert c.nodes.summary == "ready on NVIDIA A100 [bbbbbb] and NVIDIA H100 [aaaaaa]; tokens across them"
    # three nodes drawn from 2/3 H100, 1/3 A100 agree bitwise only when all are of one class
    assert abs(c.nodes.consensus["bitwise"]["p3of3"] - ((2 / 3) ** 3 + (1 / 3) ** 3)) < 1e-9
    assert c.nodes.consensus["tokens"]["p3of3"] == 1.0
    # node is judged by default, and equal codes with other floats pass only through a named validator
    assert c.verdict == "not_ready" and "node: tokens" in c.reason
    text = render_markdown(a)
    assert "## Nodes" in text and "| mg/float32/qnone/cuda0/pon | reference | bitwise | tokens |" in text
    assert a.parallel_note is None  # executions on one node never overlapped


def test_costs_say_when_executions_overlapped_on_a_node(tmp_path: Path):
    def rec(node: str, start: float, end: float) -> Record:
        return Record(
            cell_id=f"c{start}",
            spec_hash="s",
            config_id="c",
            task_name="t",
            kind="gpt",
            model="m",
            axes=Axes(dtype="float32", quantize_bits=None, seed=1, device="cpu"),
            status="ok",
            node=Node(key=node, hostname=node),
            started_at=start,
            finished_at=end,
        )

    apart = [rec("a", 0, 1), rec("a", 2, 3), rec("b", 0.5, 2.5)]  # b overlaps a, but on another node
    assert parallel_note(apart, []) is None
    side_by_side = [rec("a", 0, 10), rec("a", 1, 2), rec("a", 11, 12), rec("a", 11.5, 13)]
    note = parallel_note(side_by_side, [{"executor": "local", "parallel": 2}])
    assert note.startswith("costs measured under parallel execution: 4 of 4 executions") and "parallel 2" in note
    assert parallel_note([rec("a", 0, 1), rec("a", 1, 2)], []) is None  # back to back is not side by side
