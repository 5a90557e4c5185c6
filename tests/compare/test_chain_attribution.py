"""A planted divergence in a chained task is attributed, in the report, to the stage where it
began (real tiny models; the double perturbs one stage's output after the real engine ran)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from harness.spec.matrix import dump_matrix

pytestmark = pytest.mark.slow
ROOT = Path(__file__).parent.parent.parent


@pytest.mark.parametrize("double,stage", [("TextStageDivergingChain", "text"), ("AudioStageDivergingChain", "audio")])
def test_report_names_the_stage_where_divergence_began(cli, tmp_path, tiny_gpt2, tiny_musicgen, double, stage):
    task = json.loads((ROOT / "matrices" / "tasks" / "tiny-chain-musicgen.json").read_text())
    matrix = tmp_path / "chain.toml"
    matrix.write_text(
        dump_matrix(
            {"name": "chain", "repeats": 2, "workers": 1, "timeout_s": 120, "tasks": [{"name": "chain", "task": task}]}
        )
    )
    env = {
        "HARNESS_ENGINES": f"chain=tests.doubles:{double}",
        "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    res = cli("run", str(matrix), "--out", str(tmp_path / "run"), "--no-progress", env=env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"divergence began in the {stage} stage" in res.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    repeat = report["configs"][0]["dimensions"]["repeat"]
    assert repeat["worst"] == "divergent" and repeat["stages"] == {stage: 1}
    assert f"began in: {stage} 1" in (tmp_path / "run" / "report.md").read_text()
