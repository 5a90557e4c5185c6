"""A configuration is exactly its configuration axes (harness.vocabulary.CONFIG_AXES): two cells
share a config id when, and only when, they agree on every one of those axes; every other axis
(seed, threads, batch size, load, kernels) varies within one configuration, where the comparison
dimensions compare it. The config id is spelt in harness/spec/cell.py; this ties it to the list."""

from __future__ import annotations

from pathlib import Path

from harness.spec.cell import Cell
from harness.spec.matrix import expand, matrix_from_doc
from harness.vocabulary import AXIS_NAMES, CONFIG_AXES

TASK = Path(__file__).resolve().parents[2] / "matrices" / "tasks" / "tiny-gpt2-chatbot.json"


def test_the_config_id_is_the_configuration_axes() -> None:
    doc = {
        "name": "axes",
        "repeats": 1,
        "workers": 1,
        "tasks": [{"name": "gpt", "file": str(TASK)}],
        "axes": {
            "dtype": ["float32", "bfloat16"],
            "quantize_bits": ["none", 8],
            "seed": [1, 2],
            "threads": [1, 2],
            "batch_size": [1, 2],
            "profile": ["on", "off"],
            "load": ["cold", "warm"],
            "tf32": ["off", "on"],
        },
    }
    cells = expand(matrix_from_doc(doc), available_devices=["cpu"])
    groups: dict[str, list[Cell]] = {}
    for c in cells:
        groups.setdefault(c.config_id, []).append(c)
    values = {cid: {tuple(getattr(c.axes, a) for a in CONFIG_AXES) for c in group} for cid, group in groups.items()}
    assert all(len(v) == 1 for v in values.values())  # one configuration: one value of each axis
    assert len({next(iter(v)) for v in values.values()}) == len(groups)  # and each value: one configuration
    for axis in [a for a in AXIS_NAMES if a not in CONFIG_AXES and a in doc["axes"]]:
        assert any(len({getattr(c.axes, axis) for c in group}) > 1 for group in groups.values()), axis
