"""Worker logs count repeated library messages (first occurrence kept, then "(repeated N more
times)"), and the report lists each distinct warning once with its total count."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from harness.analysis.logs import log_file_warnings
from harness.execution.quiet_logs import counting_handler

CAST = "MatMul8bitLt: inputs will be cast from torch.float32 to float16 during quantization"


def test_repeats_are_counted_not_repeated_and_parsed_back(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler, counter = counting_handler(stream)
    log = logging.getLogger("test.quiet.bnb")
    log.propagate = False
    log.addHandler(handler)
    try:
        for _ in range(500):
            log.warning("MatMul8bitLt: inputs will be cast from %s to float16 during quantization", "torch.float32")
        log.error("something else\nwith a second line")
        counter.flush_repeats(stream)
        for _ in range(20_188):
            log.warning(CAST.replace("torch.float32", "%s"), "torch.float32")
        counter.flush_repeats(stream)
        counter.flush_repeats(stream)  # nothing new: writes nothing
    finally:
        log.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert lines == [
        f"WARNING test.quiet.bnb: {CAST}",
        "ERROR test.quiet.bnb: something else with a second line",
        f"WARNING test.quiet.bnb: {CAST} (repeated 499 more times)",
        f"WARNING test.quiet.bnb: {CAST} (repeated 20188 more times)",
    ]
    (tmp_path / "worker-cpu-on-w0.log").write_text(stream.getvalue() + "Traceback (most recent call last):\n")
    found = {(w.level, w.message): w for w in log_file_warnings(tmp_path)}
    assert found[("WARNING", CAST)].count == 20_688
    assert found[("ERROR", "something else with a second line")].count == 1
    assert found[("WARNING", CAST)].where == ["worker-cpu-on-w0.log"] and len(found) == 2


@pytest.mark.slow
def test_quantized_run_keeps_worker_logs_small_and_reports_the_warning(cli, tmp_path: Path, tiny_gpt2) -> None:
    from tests.execution.test_matrix_runner import mini_matrix

    matrix = mini_matrix(tmp_path, axes={"seed": [1], "threads": [1], "batch_size": [1], "quantize_bits": [8]})
    res = cli("run", str(matrix), "--out", str(tmp_path / "run"), "--no-progress")
    assert res.returncode == 0, res.stderr
    logs = sorted((tmp_path / "run").glob("worker-*.log"))
    assert logs and all(p.stat().st_size < 50_000 for p in logs), [p.stat().st_size for p in logs]
    text = logs[0].read_text()
    assert text.count(f"{CAST}\n") == 1 and f"{CAST} (repeated " in text
    doc = json.loads((tmp_path / "run" / "report.json").read_text())
    cast = [w for w in doc["warnings"] if w["message"] == CAST]
    assert len(cast) == 1 and cast[0]["count"] > 1 and cast[0]["source"] == "bitsandbytes.autograd._functions"
    assert (
        f"| {cast[0]['count']} | bitsandbytes.autograd._functions | {CAST} |"
        in (tmp_path / "run" / "report.md").read_text()
    )
